"""SIGKILL while a map is published, and damaged intermediates on resume: a rerun always repairs the set.

The kill is real: the CLI runs in a subprocess whose ``os.replace`` sends SIGKILL to its own process
just before it would move a chosen file into its final place (so the kill lands at an exact step).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from dunemap.io.outputs import OutputExistsError
from dunemap.mapping.config import MapConfig
from dunemap.mapping.engine import make_assembler, map_fingerprint, map_raster, plan_map, predictor_legend
from dunemap.mapping.predict import predict_block
from dunemap.mapping.writer import partial_dir
from dunemap.raster.reader import EmbeddingReader
from dunemap.raster.tags import model_tags
from dunemap.runtime import load_predictor

REPO = Path(__file__).resolve().parents[2]
OPTIONS = ["--window", "64", "--stride", "32", "--block-size", "32", "--precision", "fp32", "--threads", "1",
           "--device", "cpu", "--no-progress"]
KILLER = """
import os, signal, sys
real = os.replace
def replace(src, dst, *args, **kw):
    if os.path.basename(str(dst)) == os.environ["KILL_BEFORE"]:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, *args, **kw)
os.replace = replace
from dunemap.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _run(*argv, kill_before: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "KILL_BEFORE": kill_before or "-"}
    return subprocess.run([sys.executable, "-c", KILLER, *map(str, argv)], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.fixture
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as the CLI runs with --threads 1: the same sums in the same order
    yield
    torch.set_num_threads(before)


@pytest.fixture
def reference(aef_raster, tiny_checkpoint: Path, tmp_path: Path, one_torch_thread):
    path = aef_raster(96, 96)
    ref = map_raster(path, load_predictor(tiny_checkpoint, precision="fp32"), tmp_path / "ref" / "map.tif",
                     MapConfig(window=64, stride=32, block_size=32, confidence="uint8", progress=False))
    return path, ref


@pytest.mark.parametrize("kill_before", ["map_confidence.tif", "map.tif"])
def test_kill_while_publishing_over_an_earlier_set(kill_before: str, reference, tiny_checkpoint: Path,
                                                   tmp_path: Path) -> None:
    path, ref = reference
    out = tmp_path / "out" / "map.tif"
    conf = out.with_name("map_confidence.tif")
    # an earlier complete set, made with other settings (so its bytes differ from the new run's)
    first = _run("map", path, "--weights", tiny_checkpoint, "--out", out, *OPTIONS, "--confidence", "float32",
                 "--blend", "uniform")
    assert first.returncode == 0, first.stderr
    old, old_conf = out.read_bytes(), conf.read_bytes()

    killed = _run("map", path, "--weights", tiny_checkpoint, "--out", out, *OPTIONS, "--confidence", "uint8",
                  "--overwrite", kill_before=kill_before)
    assert killed.returncode == -9, killed.stderr
    # never a mixed set: the earlier class map went first, so no class map stands beside newer companions
    assert not out.exists()
    assert conf.read_bytes() == (old_conf if kill_before == "map_confidence.tif" else ref.products["confidence"].read_bytes())
    assert old != ref.path.read_bytes()

    again = _run("map", path, "--weights", tiny_checkpoint, "--out", out, *OPTIONS, "--confidence", "uint8")
    assert again.returncode == 0, again.stderr
    assert out.read_bytes() == ref.path.read_bytes()
    assert conf.read_bytes() == ref.products["confidence"].read_bytes()
    assert sorted(p.name for p in out.parent.iterdir()) == ["map.qml", "map.tif", "map.tif.aux.xml", "map_confidence.tif"]


def test_kill_while_publishing_stats_leaves_no_temp_files(reference, tmp_path: Path) -> None:
    _, ref = reference
    csv = tmp_path / "s.csv"
    killed = _run("stats", ref.path, "--out", csv, kill_before="s.csv")
    assert killed.returncode == -9
    assert not csv.exists() and [p.name for p in tmp_path.glob(".s.*.tmp.csv")]
    done = _run("stats", ref.path, "--out", csv, "--overwrite")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("s.", ".s."))) == ["s.csv", "s.json"]


def _interrupted(path: Path, checkpoint: Path, out: Path, blocks: int) -> Path:
    """A partial map with ``blocks`` blocks predicted and journalled, as a killed run leaves it."""
    predictor = load_predictor(checkpoint, precision="fp32")
    config = MapConfig(window=64, stride=32, block_size=32, confidence="uint8", progress=False)
    with EmbeddingReader(path) as reader:
        plan = plan_map(reader, config)
        assembler = make_assembler(out, plan, predictor_legend(predictor), config,
                                   map_fingerprint([path], plan, predictor, config), predictor.precision,
                                   model=model_tags(predictor))
        assembler.open(False)
        for block in assembler.pending()[:blocks]:
            assembler.add(predict_block(reader, predictor, block, config))
        assert assembler.journal.written
    return partial_dir(out) / "classes.tif"


def _tile_offsets(path: Path) -> list[tuple[int, int]]:
    """(offset, byte count) of each tile of a little-endian classic TIFF's first image (TileOffsets, TileByteCounts)."""
    import struct

    raw = path.read_bytes()
    assert raw[:4] == b"II*\0", "expected a little-endian classic TIFF"
    ifd = struct.unpack_from("<I", raw, 4)[0]
    tags = {}
    for i in range(struct.unpack_from("<H", raw, ifd)[0]):
        tag, kind, count, value = struct.unpack_from("<HHII", raw, ifd + 2 + 12 * i)
        if tag not in (324, 325):
            continue
        size = {3: 2, 4: 4, 16: 8}.get(kind, 4)
        fmt = {3: "H", 4: "I", 16: "Q"}.get(kind, "I")
        at = ifd + 2 + 12 * i + 8 if count * size <= 4 else value
        tags[tag] = struct.unpack_from(f"<{count}{fmt}", raw, at)
    return list(zip(tags[324], tags[325]))


@pytest.mark.parametrize("damage", ["header", "tail", "tile"])
def test_damaged_intermediate_is_predicted_again(damage: str, reference, tiny_checkpoint: Path, tmp_path: Path) -> None:
    path, ref = reference
    out = tmp_path / "out" / "map.tif"
    classes = _interrupted(path, tiny_checkpoint, out, blocks=12)
    raw = bytearray(classes.read_bytes())
    if damage == "header":
        raw[:64] = b"\0" * 64
    elif damage == "tail":
        raw = raw[: len(raw) * 2 // 3]
    else:  # garbage in the compressed bytes of the written tiles: each such block is predicted again
        for offset, count in _tile_offsets(classes):
            if count:
                raw[offset:offset + count] = b"\xff" * count
    classes.write_bytes(bytes(raw))

    done = _run("map", path, "--weights", tiny_checkpoint, "--out", out, *OPTIONS, "--confidence", "uint8")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    if damage == "tile":
        assert "cannot be read back; predicting them again" in done.stderr
    with rasterio.open(out) as got, rasterio.open(ref.path) as want:
        assert np.array_equal(got.read(1), want.read(1))
    assert out.read_bytes() == ref.path.read_bytes()
    assert not partial_dir(out).exists()


def test_a_stale_work_folder_never_replaces_a_finished_map(aef_raster, tiny_checkpoint: Path, tmp_path: Path,
                                                           one_torch_thread) -> None:
    """map A --out S; an interrupted re-run leaves S.tif.partial; map B --out S is refused without --overwrite."""
    a, b = aef_raster(96, 96, seed=0, name="a.tif"), aef_raster(96, 96, seed=1, name="b.tif")
    out = tmp_path / "s.tif"
    assert _run("map", a, "--weights", tiny_checkpoint, "--out", out, *OPTIONS).returncode == 0
    before = out.read_bytes()
    _interrupted(a, tiny_checkpoint, out, 2)  # the work folder an interrupted run over S leaves
    proc = _run("map", b, "--weights", tiny_checkpoint, "--out", out, *OPTIONS)
    assert proc.returncode == 1 and "s.tif: already exists; pass --overwrite" in proc.stderr, proc.stderr
    assert out.read_bytes() == before
    with pytest.raises(OutputExistsError, match="already exists"):  # the Python API is exactly as safe
        map_raster(b, load_predictor(tiny_checkpoint, precision="fp32"), out, MapConfig(window=64, stride=32))
    assert out.read_bytes() == before
