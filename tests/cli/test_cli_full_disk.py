"""A full disk: every command says "no space left on device" in one line and publishes nothing (issue 29 item 11).

Each case writes its outputs into a small tmpfs that this test mounts (4 MiB, filled to leave a few KiB) and
unmounts again, and runs the real command in a subprocess. It checks the exit status, the one line naming the
output and its device, that no traceback was printed, and that nothing was published: no product, no
temporary file, no lock (a map may leave its work folder, from which it resumes). Mounting needs root (or
CAP_SYS_ADMIN); elsewhere the cases are skipped with that reason.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from safety_helpers import BANDS, CliServer, assert_one_line_error, unit_vectors, write_tif, write_tiny_dataset

from dunemap.cli import main

DISK_KIB = 4096
pytestmark = pytest.mark.slow  # about 20 real commands, several of them training or mapping


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Inputs on a roomy disk: a trained mit_tiny run, an embedding raster, its map and labelled points."""
    import numpy as np
    import pyogrio.raw
    import rasterio
    import shapely

    root = tmp_path_factory.mktemp("world")
    data = write_tiny_dataset(root / "data", {"train": 4, "val": 1, "test": 1})
    assert main(["train", "--data-root", str(data), "--save-dir", str(root / "run"), "--model", "mit_tiny",
                 "--bands", str(BANDS), "--epochs", "1", "--batch-size", "4", "--text", "random", "--catalog",
                 str(data / "catalog.yaml"), "--no-progress", "--device", "cpu", "--precision", "fp32"]) == 0
    emb = write_tif(root / "emb.tif", unit_vectors(96, 96))
    ckpt = root / "run" / "best_model.pth"
    assert main(["map", str(emb), "--weights", str(ckpt), "--out", str(root / "m.tif"), "--window", "32",
                 "--stride", "32", "--precision", "fp32", "--device", "cpu", "--no-progress"]) == 0
    assert main(["sample", str(root / "m.tif"), "--n", "60", "--out", str(root / "points.gpkg")]) == 0
    meta, _, geometry, fields = pyogrio.raw.read(root / "points.gpkg", layer="points")
    names, fields = list(meta["fields"]), list(fields)
    points = shapely.from_wkb(geometry)
    with rasterio.open(root / "m.tif") as src:  # the points are blind: a reference that agrees with the map
        agree = np.array([v[0] for v in src.sample(zip(shapely.get_x(points), shapely.get_y(points)))])
    fields[names.index("ref_class")] = agree.astype(fields[names.index("ref_class")].dtype)
    pyogrio.raw.write(root / "ref.gpkg", geometry, fields, names, driver="GPKG", geometry_type="Point",
                      crs=meta["crs"])
    return {"data": data, "ckpt": ckpt, "emb": emb, "map": root / "m.tif", "ref": root / "ref.gpkg"}


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory):
    server = CliServer(tmp_path_factory.mktemp("cli"))
    yield server.run
    server.close()


@pytest.fixture
def full_disk(tmp_path: Path):
    """``full_disk(free_kib)``: a fresh 4 MiB tmpfs with ``free_kib`` KiB left; unmounted after the test."""
    mounts: list[Path] = []

    def make(free_kib: int) -> Path:
        disk = tmp_path / f"disk{len(mounts)}"
        disk.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_KIB}k", "tmpfs", str(disk)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip()}); the full-disk cases need root")
        mounts.append(disk)
        with open(disk / ".filler", "wb") as fh:  # tmpfs takes the pages as they are written
            fh.write(b"\0" * ((DISK_KIB - free_kib) * 1024))
        return disk

    yield make
    for disk in mounts:
        subprocess.run(["umount", str(disk)], check=False)


def _left(disk: Path) -> list[str]:
    """What a failed run left on the disk (the filler aside), work folders' contents included."""
    return sorted(str(p.relative_to(disk)) for p in disk.rglob("*") if p.name != ".filler")


MAP = ["--window", "32", "--stride", "32", "--device", "cpu", "--precision", "fp32", "--no-progress"]


def _args(case: str, w: dict[str, Path], d: Path) -> list:
    return {
        "map": ["map", w["emb"], "--weights", w["ckpt"], "--out", d / "m.tif", *MAP],
        "map_companions": ["map", w["emb"], "--weights", w["ckpt"], "--out", d / "m.tif", "--confidence", "float32",
                           "--probabilities", "float32", *MAP],
        "train": ["train", "--data-root", w["data"], "--save-dir", d / "run", "--model", "mit_tiny", "--bands",
                  str(BANDS), "--epochs", "1", "--batch-size", "4", "--text", "random", "--catalog",
                  w["data"] / "catalog.yaml", "--no-progress", "--device", "cpu", "--precision", "fp32"],
        "calibrate": ["calibrate", "--weights", w["ckpt"], "--data-root", w["data"], "--out", d / "cal.pth",
                      "--device", "cpu"],
        "evaluate": ["evaluate", "--data-root", w["data"], "--weights", w["ckpt"], "--out-dir", d / "ev",
                     "--device", "cpu"],
        "quicklook": ["quicklook", w["map"], "--out", d / "q.png"],
        "vectorize_gpkg": ["vectorize", w["map"], "--out", d / "v.gpkg"],
        "vectorize_shp": ["vectorize", w["map"], "--out", d / "v.shp"],
        "sample": ["sample", w["map"], "--n", "60", "--out", d / "p.gpkg"],
        "accuracy": ["accuracy", w["map"], "--reference", w["ref"], "--out", d / "acc.json"],
        "stats": ["stats", w["map"], "--out", d / "areas.csv"],
        "synth_scene": ["synth", "scene", "--region", "namib", "--size", "256", "--out", d],
        "suggest": ["suggest", w["emb"], "--weights", w["ckpt"], "--out", d / "patches.gpkg", "--device", "cpu"],
    }[case]


# map: 16 KiB fails on its journal, 100 in the block writer (GDAL's "Write failed"), 160 in the COG conversion
CASES = [("map", 16), ("map_companions", 100), ("map_companions", 160), ("train", 20), ("train", 3000), ("calibrate", 20),
         ("evaluate", 20), ("quicklook", 20), ("vectorize_gpkg", 20), ("vectorize_shp", 20), ("sample", 20),
         ("accuracy", 4), ("accuracy", 8), ("stats", 4), ("stats", 8), ("synth_scene", 20), ("suggest", 20)]


@pytest.mark.parametrize(("case", "free_kib"), CASES, ids=[f"{c}-{k}KiB" for c, k in CASES])
def test_full_disk_is_one_line_and_publishes_nothing(case: str, free_kib: int, world, cli, full_disk) -> None:
    disk = full_disk(free_kib)
    proc = cli(*_args(case, world, disk))
    assert_one_line_error(proc, rf"{disk}\S*: no space left on device {disk} \(")
    left = _left(disk)
    assert not [p for p in left if ".tmp" in p or p.endswith(".lock")], left  # no temporary file, no lock
    if case.startswith("map"):
        assert all(p.startswith("m.tif.partial") for p in left), left  # only the work folder it resumes from
    elif case == "train":
        assert all(p.startswith("run") and not p.endswith(".partial") for p in left), left  # whole files only
    else:
        assert left in ([], ["ev"]), left


@pytest.mark.parametrize("case", ["accuracy", "map_companions"])
def test_rerun_after_space_is_freed_needs_no_overwrite(case: str, world, cli, full_disk) -> None:
    """A full disk publishes no half set: once space is freed the same command succeeds, never refused."""
    disk = full_disk(8 if case == "accuracy" else 160)
    assert cli(*_args(case, world, disk)).returncode == 1
    (disk / ".filler").unlink()
    again = cli(*_args(case, world, disk))
    assert again.returncode == 0, again.stderr[-2000:]
    expected = {"accuracy": ["acc.csv", "acc.json"],
                "map_companions": ["m.qml", "m.tif", "m.tif.aux.xml", "m_confidence.tif", "m_probabilities.tif"]}[case]
    assert _left(disk) == expected
