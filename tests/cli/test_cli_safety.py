"""Nothing lost, nothing silently wrong: every command's failure behaviour, run as the real CLI in subprocesses.

Each case builds its inputs from one shared world (a tiny trained run, a 16-band embedding raster, a
map with its companions) plus files of its own, runs ``python -m dunemap``, and checks the exit code,
the one-line message naming the file or option, that no traceback was printed, and that the bytes of
every file that existed before are unchanged.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import rasterio
import shapely
import torch

from safety_helpers import (BANDS, CliServer, assert_one_line_error, hashes, permission_bound_prefix, run_cli,
                            unit_vectors, write_tif, write_tiny_dataset)

from dunemap.cli import main
from dunemap.io.outputs import lock_path

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Read-only inputs shared by every case: a trained mit_tiny run, an embedding raster and its map set."""
    root = tmp_path_factory.mktemp("world")
    data = write_tiny_dataset(root / "data", {"train": 4, "val": 1, "test": 1})
    run = root / "run"
    assert main(["train", "--data-root", str(data), "--save-dir", str(run), "--model", "mit_tiny", "--bands",
                 str(BANDS), "--epochs", "1", "--batch-size", "4", "--text", "random", "--catalog",
                 str(data / "catalog.yaml"), "--no-progress", "--device", "cpu", "--precision", "fp32"]) == 0
    emb = write_tif(root / "emb.tif", unit_vectors(48, 48))
    maps = root / "maps"
    assert main(["map", str(emb), "--weights", str(run / "best_model.pth"), "--out", str(maps / "m.tif"),
                 "--window", "32", "--stride", "32", "--confidence", "uint8", "--probabilities", "uint8",
                 "--precision", "fp32", "--device", "cpu", "--no-progress"]) == 0
    foreign = np.zeros((1, 40, 40), np.uint8)
    foreign[0, :, 20:] = 2
    write_tif(root / "foreign.tif", foreign, colormap={0: (200, 200, 150, 255), 2: (0, 90, 200, 255)})
    write_tif(root / "categories.tif", foreign)  # GDAL keeps category names in the .aux.xml beside it
    (root / "categories.tif.aux.xml").write_text(
        '<PAMDataset><PAMRasterBand band="1"><CategoryNames><Category>sand</Category><Category>-</Category>'
        "<Category>dunes</Category></CategoryNames></PAMRasterBand></PAMDataset>\n")
    write_tif(root / "bare.tif", foreign)
    zones = root / "zones_nocrs.shp"  # a shapefile without its .prj: no CRS
    pyogrio.raw.write(zones, np.asarray(shapely.to_wkb([shapely.box(500_000, 6_999_700, 500_200, 7_000_000)]),
                                        dtype=object),
                      [np.array(["a"], dtype=object)], ["name"], driver="ESRI Shapefile", geometry_type="Polygon")
    return {"root": root, "data": data, "run": run, "ckpt": run / "best_model.pth", "emb": emb,
            "map": maps / "m.tif", "conf": maps / "m_confidence.tif", "prob": maps / "m_probabilities.tif",
            "foreign": root / "foreign.tif", "categories": root / "categories.tif", "bare": root / "bare.tif",
            "zones_nocrs": zones}


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory):
    server = CliServer(tmp_path_factory.mktemp("cli"))
    yield server.run
    server.close()


MAP = ["--window", "32", "--stride", "32", "--precision", "fp32", "--device", "cpu", "--no-progress"]
TRAIN = ["--model", "mit_tiny", "--bands", str(BANDS), "--epochs", "1", "--batch-size", "4", "--text", "random",
         "--no-progress", "--device", "cpu", "--precision", "fp32"]


def _map(w, t, *extra):
    return ["map", w["emb"], "--weights", w["ckpt"], *MAP, *extra]


def _file(path: Path, data: bytes = b"earlier work") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _nocrs(w, t):
    write_tif(t / "nocrs.tif", unit_vectors(32, 32), crs=None)
    return ["map", t / "nocrs.tif", "--weights", w["ckpt"], "--out", t / "o.tif", *MAP]


def _symlinked_partial(w, t):
    (t / "elsewhere").mkdir()
    (t / "o.tif.partial").symlink_to(t / "elsewhere")
    return _map(w, t, "--out", t / "o.tif")


def _nan_checkpoint(w, t):
    obj = torch.load(w["ckpt"], weights_only=True)
    name = next(iter(obj["state_dict"]))
    obj["state_dict"][name] = torch.full_like(obj["state_dict"][name], float("nan"))
    torch.save(obj, t / "nan.pth")
    return ["map", w["emb"], "--weights", t / "nan.pth", "--out", t / "o.tif", *MAP]


def _train(w, t, *extra):
    return ["train", "--data-root", w["data"], "--save-dir", t / "run", "--catalog", w["data"] / "catalog.yaml",
            *TRAIN, *extra]


def _resume(w, t, *extra):
    shutil.copytree(w["run"], t / "run")
    return _train(w, t, "--resume", *extra)


def _text_npy(w, t):
    np.save(t / "m.npy", np.eye(10, 8, dtype=np.float32))
    return ["text", "encode", "--encoder", f"npy:{t / 'm.npy'}", "--out", t / "m.npy"]


def _prepare_into_input(w, t):
    img = write_tif(t / "ds" / "img_dir" / "scene.tif", unit_vectors(32, 32))
    lbl = write_tif(t / "labels.tif", np.zeros((1, 32, 32), np.uint8))
    return ["prepare", "--image", img, "--labels", lbl, "--out", t / "ds", "--tile", "32", "--overwrite"]


# name: (build argv from (world, tmp), expected exit code, regex the error line must match)
CASES = {
    "map over its checkpoint": (lambda w, t: _map(w, t, "--out", w["ckpt"]), 1, r"best_model\.pth.*would overwrite the input"),
    "map over its input": (lambda w, t: _map(w, t, "--out", w["emb"]), 1, r"emb\.tif.*would overwrite the input"),
    "map over an existing map": (lambda w, t: _map(w, t, "--out", _file(t / "o.tif")), 1,
                                 r"o\.tif: already exists; pass --overwrite"),
    "map over a stray companion": (lambda w, t: _map(w, t, "--out", t / "o.tif") if _file(t / "o_confidence.tif")
                                   else None, 1, r"o_confidence\.tif: already exists"),
    "map --out a folder": (lambda w, t: _map(w, t, "--out", t), 1, r"is a folder"),
    "map --out under a file": (lambda w, t: _map(w, t, "--out", _file(t / "f") / "o.tif"), 1,
                               r"o\.tif: cannot create its folder .*f"),
    "map 250-character name": (lambda w, t: _map(w, t, "--out", t / ("n" * 250 + ".tif")), 1, r"n{250}\.tif.*too long"),
    "map --device tpu7": (lambda w, t: _map(w, t, "--out", t / "o.tif", "--device", "tpu7"), 1, r"--device 'tpu7'"),
    "map symlinked work folder": (_symlinked_partial, 1, r"o\.tif\.partial: the work folder is a symbolic link"),
    "map input without CRS": (_nocrs, 1, r"nocrs\.tif: the raster has no CRS.*--allow-no-crs"),
    "map non-finite checkpoint": (_nan_checkpoint, 1, r"nan\.pth: unusable checkpoint.*not finite"),
    "stats over its map": (lambda w, t: ["stats", w["map"], "--out", w["map"]], 1, r"m\.tif.*would overwrite the input"),
    "quicklook over its map": (lambda w, t: ["quicklook", w["map"], "--out", w["map"]], 1, r"would overwrite the input"),
    "vectorize over its map": (lambda w, t: ["vectorize", w["map"], "--out", w["map"]], 1, r"would overwrite the input"),
    "stats of a confidence raster": (lambda w, t: ["stats", w["conf"], "--out", t / "s.csv"], 1,
                                     r"m_confidence\.tif: is dunemap's confidence raster"),
    "vectorize a probability raster": (lambda w, t: ["vectorize", w["prob"], "--out", t / "v.gpkg"], 1,
                                       r"m_probabilities\.tif: is dunemap's class-probability raster"),
    "quicklook of a confidence raster": (lambda w, t: ["quicklook", w["conf"], "--out", t / "q.png"], 1,
                                         r"confidence raster"),
    "stats with zones without CRS": (lambda w, t: ["stats", w["map"], "--out", t / "s.csv", "--zones", w["zones_nocrs"]],
                                     1, r"zones_nocrs\.shp: the zones have no CRS"),
    "stats of another tool's map": (lambda w, t: ["stats", w["foreign"], "--out", t / "s.csv"], 0, None),
    "stats of a map with GDAL category names": (lambda w, t: ["stats", w["categories"], "--out", t / "s.csv"], 0, None),
    "quicklook of a bare uint8 band": (lambda w, t: ["quicklook", w["bare"], "--out", t / "q.png"], 1,
                                       r"bare\.tif: a uint8 band without a colour table.*not known to be a class map"),
    "stats over existing CSV": (lambda w, t: ["stats", w["map"], "--out", _file(t / "s.csv")], 1,
                                r"s\.csv: already exists; pass --overwrite"),
    "train into a folder holding a run": (lambda w, t: _train(w, t) if shutil.copytree(w["run"], t / "run") else None,
                                          1, r"run: already holds files.*--overwrite"),
    "train --lr -0.001": (lambda w, t: _train(w, t, "--lr", "-0.001"), 1, r"--lr -0\.001 must be a finite number"),
    "train --lr nan": (lambda w, t: _train(w, t, "--lr", "nan"), 1, r"--lr nan must be a finite number"),
    "train --num-workers -1": (lambda w, t: _train(w, t, "--num-workers", "-1"), 1, r"--num-workers -1 must be"),
    "train --resume with another lr and batch": (lambda w, t: _resume(w, t, "--epochs", "2", "--lr", "0.001",
                                                                      "--batch-size", "2"), 1,
                                                 r"--batch-size 2 \(saved run: 4\), --lr 0\.001 \(saved run: 6e-05\)"),
    # batch 1: 4 steps an epoch; the first (finite loss) step at lr 1e6 blows the weights up, the next 3 losses are
    # not finite: the run stops there, before any checkpoint is written (not at the save guard after the epoch)
    "train --lr 1e6 diverges": (lambda w, t: _train(w, t, "--lr", "1e6", "--epochs", "2", "--batch-size", "1"), 1,
                                r"training diverged: the loss was not finite \(NaN or inf\) for 3 steps in a row, "
                                r"last at epoch 1 step 4; lower --lr"),
    "text encode over its npy input": (_text_npy, 1, r"m\.npy: the output would overwrite the input"),
    "prepare into a folder holding its image": (_prepare_into_input, 1, r"img_dir: the output folder holds the input"),
    "synth scene over earlier files": (lambda w, t: ["synth", "scene", "--size", "32", "--out", t] if _file(
        t / "namib_0_labels.tif") else None, 1, r"namib_0_emb\.tif: already exists|namib_0_labels\.tif: already exists"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_failure_matrix(case: str, world: dict[str, Path], tmp_path: Path, cli) -> None:
    build, code, pattern = CASES[case]
    argv = build(world, tmp_path)
    before = hashes(world["root"], tmp_path)
    entries = set(tmp_path.rglob("*"))
    proc = cli(*argv)
    if code == 0:
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
    else:
        assert_one_line_error(proc, pattern)
    after = hashes(world["root"], tmp_path)
    assert {p: h for p, h in after.items() if p in before} == before, "a pre-existing file changed"
    if code == 1 and "diverges" not in case:  # refused before writing anything: no file, lock or folder left
        assert set(tmp_path.rglob("*")) == entries
    if "diverges" in case:  # stopped inside the first epoch: the run folder holds no checkpoint at all
        assert not list((tmp_path / "run").glob("*.pth"))
    if case == "map symlinked work folder":
        assert not any((tmp_path / "elsewhere").iterdir()), "dunemap wrote through the symlink"
    if code == 1 and case.startswith("map"):
        assert not (tmp_path / "o.tif").exists() or (tmp_path / "o.tif") in before


def test_read_only_output_folder_is_one_line(world: dict[str, Path], tmp_path: Path) -> None:
    """A folder of mode 0555. Root writes anywhere, so as root the command runs without the capabilities that
    let it (setpriv); a probe first shows that the folder really refuses a file under the same conditions."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    prefix = permission_bound_prefix()
    try:
        try:
            probe = subprocess.run([*prefix, sys.executable, "-c", f"open({str(folder / 'probe')!r}, 'w')"],
                                   capture_output=True, text=True, timeout=60)
        except FileNotFoundError:  # no setpriv on this machine
            pytest.skip("running as root without setpriv: no way to make a folder unwritable here")
        if probe.returncode == 0 or "PermissionError" not in probe.stderr:
            pytest.skip(f"a folder of mode 0555 is writable here even through {prefix}: {probe.stderr[-300:]}")
        proc = run_cli(*_map(world, tmp_path, "--out", folder / "o.tif"), prefix=prefix)
        assert_one_line_error(proc, r"o\.tif: cannot write in .*ro \(Permission denied\)")
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_second_map_run_on_the_same_output_is_refused(world: dict[str, Path], tmp_path: Path, cli) -> None:
    """A live process holding the output's lock: the second run is refused naming its pid; then taken over."""
    out = tmp_path / "o.tif"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(lock_path(out))!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'%d' % os.getpid()); print('held', flush=True)\n"
        "time.sleep(120)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert_one_line_error(cli(*_map(world, tmp_path, "--out", out)),
                              rf"o\.tif: another dunemap run \(pid {holder.pid}\) is writing this output")
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert lock_path(out).exists()  # the dead holder's lock file stays behind: a stale lock
    proc = cli(*_map(world, tmp_path, "--out", out))
    assert proc.returncode == 0, proc.stderr
    assert "taking over the lock" in proc.stderr and out.exists() and not lock_path(out).exists()


def test_map_overwrite_removes_stale_companions(world: dict[str, Path], tmp_path: Path, cli) -> None:
    out = tmp_path / "o.tif"
    assert cli(*_map(world, tmp_path, "--out", out, "--confidence", "uint8")).returncode == 0
    assert (tmp_path / "o_confidence.tif").exists()
    proc = cli(*_map(world, tmp_path, "--out", out, "--overwrite"))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.qml", "o.tif", "o.tif.aux.xml"]  # with its legend companions


def test_map_marks_inf_pixels_nodata(world: dict[str, Path], tmp_path: Path, cli) -> None:
    """A 12x12 block of +inf/-inf is nodata (255) in the map, exactly there; the rest is mapped."""
    data = unit_vectors(48, 48, seed=3)
    data[:, 10:22, 5:17] = np.inf
    data[3, 30, 30] = -np.inf
    write_tif(tmp_path / "inf.tif", data)
    proc = cli("map", tmp_path / "inf.tif", "--weights", world["ckpt"], "--out", tmp_path / "o.tif", *MAP)
    assert proc.returncode == 0, proc.stderr
    with rasterio.open(tmp_path / "o.tif") as src:
        classes = src.read(1)
    expected = ~np.isfinite(data).all(axis=0)
    assert np.array_equal(classes == 255, expected)


def test_vectorize_keeps_other_layers(world: dict[str, Path], tmp_path: Path, cli) -> None:
    gpkg = tmp_path / "v.gpkg"
    assert cli("vectorize", world["map"], "--out", gpkg, "--layer", "first").returncode == 0
    first = pyogrio.read_info(gpkg, layer="first")["features"]
    proc = cli("vectorize", world["map"], "--out", gpkg, "--layer", "second", "--classes", "0")
    assert proc.returncode == 0, proc.stderr
    assert sorted(str(n) for n, _ in pyogrio.list_layers(gpkg)) == ["first", "layer_styles", "second"]  # with the QGIS styles table
    assert pyogrio.read_info(gpkg, layer="first")["features"] == first
    before = hashes(gpkg)
    assert_one_line_error(cli("vectorize", world["map"], "--out", gpkg, "--layer", "first"),
                          r"v\.gpkg: already has a layer 'first'.*--overwrite")
    assert hashes(gpkg) == before


def test_train_resume_with_more_epochs_recomputes_the_schedule(world: dict[str, Path], tmp_path: Path, cli) -> None:
    shutil.copytree(world["run"], tmp_path / "run")
    proc = cli(*_train(world, tmp_path, "--resume", "--epochs", "2"))
    assert proc.returncode == 0, proc.stderr
    assert "schedule recomputed over 2 epochs" in proc.stderr
    import json

    history = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]
    assert history[1]["lr"] == pytest.approx(6e-5 * 0.5)  # poly-1 over 2 epochs, not the old schedule's 0.0
