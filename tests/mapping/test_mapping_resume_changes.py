"""A killed ``dunemap map`` resumes only what is still true: a changed model or input tile starts over, a damaged
spill file is predicted again. Real processes killed with SIGKILL, real GeoTIFFs, VRTs and checkpoints."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import rasterio
import rasterio.shutil
import torch
from mapping_helpers import smooth_unit_vectors, write_raster
from process_helpers import kill_when_predicted

from dunemap.io.aef import quantize

REPO = Path(__file__).resolve().parents[2]
OPTIONS = ["--window", "64", "--stride", "32", "--block-size", "32", "--precision", "fp32", "--device", "cpu",
           "--threads", "1", "--confidence", "uint8", "--no-progress"]


def _command(source: Path, weights: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "dunemap", "map", str(source), "--weights", str(weights), "--out", str(out), *OPTIONS]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _run(command: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=_env(), cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _kill_after(command: list[str], out: Path, blocks: int = 3) -> list[int]:
    """Start ``command`` and SIGKILL it once its journal records ``blocks`` predicted blocks; the recorded blocks."""
    blocks_done = kill_when_predicted(command, out.parent / f"{out.name}.partial" / "journal.json", blocks, _env(),
                                      cwd=REPO)
    assert not out.exists()
    return blocks_done


def _resumed(done: subprocess.CompletedProcess) -> int:
    return int(re.search(r"\((\d+) resumed\)", done.stdout).group(1))


def _same_map(a: Path, b: Path) -> None:
    assert a.read_bytes() == b.read_bytes()
    assert a.with_name("map_confidence.tif").read_bytes() == b.with_name("map_confidence.tif").read_bytes()


def _aef_tile(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_raster(path, quantize(smooth_unit_vectors(128, 128, seed), None), nodata=-128)


def test_resume_with_a_recalibrated_checkpoint_starts_over(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """Issue 29 item 4: the same tensors with another temperature change every confidence pixel."""
    emb = _aef_tile(tmp_path / "emb.tif", seed=0)
    out = tmp_path / "run" / "map.tif"
    assert _kill_after(_command(emb, tiny_checkpoint, out), out)

    recalibrated = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    recalibrated["calibration"] = {"temperature": 3.0, "split": "val"}
    w2 = tmp_path / "w2.pth"
    torch.save(recalibrated, w2)

    done = _run(_command(emb, w2, out))
    assert _resumed(done) == 0  # nothing of the W run is reused
    fresh = tmp_path / "fresh" / "map.tif"
    _run(_command(emb, w2, fresh))
    _same_map(out, fresh)
    with rasterio.open(out) as src:
        assert src.tags()["CHECKPOINT_SHA256"] == hashlib.sha256(w2.read_bytes()).hexdigest()
    with rasterio.open(out.with_name("map_confidence.tif")) as src:
        assert src.tags()["CHECKPOINT_SHA256"] == hashlib.sha256(w2.read_bytes()).hexdigest()


def test_resume_over_a_vrt_whose_source_tile_changed_starts_over(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """Issue 29 item 5: a VRT's sources are fingerprinted, not only the .vrt file, also through a nested VRT."""
    tile = _aef_tile(tmp_path / "tiles" / "tile.tif", seed=0)
    inner = tmp_path / "tiles" / "inner.vrt"
    rasterio.shutil.copy(tile, inner, driver="VRT")
    mosaic = tmp_path / "mosaic.vrt"  # a VRT over a VRT over the tile
    mosaic.write_text(inner.read_text().replace(">tile.tif<", ">tiles/inner.vrt<"))
    vrt_bytes = mosaic.read_bytes()
    out = tmp_path / "run" / "map.tif"
    assert _kill_after(_command(mosaic, tiny_checkpoint, out), out)

    _aef_tile(tile, seed=5)  # the same size and grid, other pixels
    assert mosaic.read_bytes() == vrt_bytes
    done = _run(_command(mosaic, tiny_checkpoint, out))
    assert _resumed(done) == 0
    fresh = tmp_path / "fresh" / "map.tif"
    _run(_command(mosaic, tiny_checkpoint, fresh))
    _same_map(out, fresh)


def test_resume_unchanged_vrt_still_resumes(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """The fingerprint of the sources is stable: an untouched VRT mosaic resumes and ends byte-identical."""
    tile = _aef_tile(tmp_path / "tile.tif", seed=1)
    mosaic = tmp_path / "mosaic.vrt"
    rasterio.shutil.copy(tile, mosaic, driver="VRT")
    out = tmp_path / "run" / "map.tif"
    at_kill = _kill_after(_command(mosaic, tiny_checkpoint, out), out)
    done = _run(_command(mosaic, tiny_checkpoint, out))
    assert _resumed(done) == len(at_kill)
    fresh = tmp_path / "fresh" / "map.tif"
    _run(_command(mosaic, tiny_checkpoint, fresh))
    _same_map(out, fresh)


def test_truncated_spill_file_is_predicted_again(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """Issue 29 item 12: a damaged spill in OUT.partial/spills/ costs its block a new prediction, not a BadZipFile."""
    emb = _aef_tile(tmp_path / "emb.tif", seed=2)
    out = tmp_path / "run" / "map.tif"
    at_kill = _kill_after(_command(emb, tiny_checkpoint, out), out, blocks=3)
    written = json.loads((out.parent / "map.tif.partial" / "journal.json").read_text())["written"]
    spills = sorted((out.parent / "map.tif.partial" / "spills").glob("*.npz"))
    # parts a predicted block saved for a block not yet written: what the journal vouches for
    vouched = [p for p in spills if int(p.stem.split("_")[1]) in at_kill and int(p.stem.split("_")[0]) not in written]
    assert vouched, f"no spill of the predicted blocks {at_kill}: {[p.name for p in spills]}"
    data = vouched[0].read_bytes()
    vouched[0].write_bytes(data[: len(data) // 2])  # a spill cut short, as a crash before its fsync leaves it

    done = _run(_command(emb, tiny_checkpoint, out))
    assert "BadZipFile" not in done.stderr and "Traceback" not in done.stderr
    assert re.search(r"saved block part\(s\) missing or damaged; predicting block\(s\) \[\d", done.stderr)
    assert 0 < _resumed(done) < len(at_kill)  # the rest of the journal is still used
    fresh = tmp_path / "fresh" / "map.tif"
    _run(_command(emb, tiny_checkpoint, fresh))
    _same_map(out, fresh)
    assert not (out.parent / "map.tif.partial").exists()

