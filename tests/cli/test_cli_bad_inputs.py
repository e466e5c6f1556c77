"""Inputs that once passed silently or crashed (issue 29): each refused in one line naming the file, or warned
about where it is made, through the real CLI in a subprocess on real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from affine import Affine
from safety_helpers import BANDS, assert_one_line_error, run_cli, unit_vectors, write_tif, write_tiny_dataset

from dunemap.raster.legend import ClassLegend

MAP_TRANSFORM = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 7_000_000.0)  # safety_helpers.write_tif's grid


def _class_map(path: Path, classes: np.ndarray, names: list[str]) -> Path:
    legend = ClassLegend.build(names, [(200, 0, 0), (0, 200, 0), (0, 0, 200), (200, 200, 0)][: len(names)])
    return write_tif(path, classes[None].astype(np.uint8), nodata=255, colormap=legend.colormap(), tags=legend.tags())


def _three_classes(root: Path) -> Path:
    """A 100 x 100 map: class b on a 16 x 16 square, c on 4 pixels, a on the rest."""
    classes = np.zeros((100, 100), np.uint8)
    classes[:16, :16] = 1
    classes[50:52, 50:52] = 2
    return _class_map(root / "map.tif", classes, ["a", "b", "c"])


def _points_per_class(path: Path, map_path: Path) -> dict[int, int]:
    """Points per map class, read from the map under each point (the points themselves are blind)."""
    _, _, wkb, _ = pyogrio.raw.read(path, layer="points")
    points = shapely.from_wkb(wkb)
    with rasterio.open(map_path) as src:
        values = np.array([v[0] for v in src.sample(zip(shapely.get_x(points), shapely.get_y(points)))])
    ids, counts = np.unique(values, return_counts=True)
    return dict(zip(ids.tolist(), counts.tolist()))


def test_sample_by_default_gives_every_class_the_two_points_accuracy_needs(tmp_path: Path) -> None:
    map_path = _three_classes(tmp_path)
    proc = run_cli("sample", map_path, "--n", "50", "--out", tmp_path / "p.gpkg")
    assert proc.returncode == 0, proc.stderr
    counts = _points_per_class(tmp_path / "p.gpkg", map_path)
    assert sum(counts.values()) == 50 and min(counts[k] for k in (0, 1, 2)) >= 2, counts
    assert "WARNING" not in proc.stderr
    # a smaller minimum asked for: the sample is drawn, with one warning naming the classes accuracy will refuse
    proc = run_cli("sample", map_path, "--n", "50", "--min-per-class", "0", "--out", tmp_path / "p0.gpkg")
    assert proc.returncode == 0, proc.stderr
    assert _points_per_class(tmp_path / "p0.gpkg", map_path).get(2, 0) < 2
    warnings = [line for line in proc.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "class 2 (c) 0" in warnings[0] and "--min-per-class 2" in warnings[0], warnings


def test_accuracy_refuses_reference_points_without_a_crs(tmp_path: Path) -> None:
    map_path = _three_classes(tmp_path)
    x, y = MAP_TRANSFORM @ (np.array([5.5, 80.5, 8.5, 9.5]), np.array([5.5, 80.5, 8.5, 9.5]))
    points = tmp_path / "nocrs.gpkg"
    with pytest.warns(UserWarning, match="'crs' was not provided"):  # what a user without a CRS gets, too
        pyogrio.raw.write(points, shapely.to_wkb(shapely.points(x, y)), [np.array(["a", "a", "b", "b"], dtype=object)],
                          ["ref_class"], driver="GPKG", geometry_type="Point")
    proc = run_cli("accuracy", map_path, "--reference", points, "--out", tmp_path / "acc.json")
    assert_one_line_error(proc, r"nocrs\.gpkg: the reference points have no CRS")
    assert not (tmp_path / "acc.json").exists() and not (tmp_path / "acc.csv").exists()


def test_benchmarks_md_that_is_not_text_is_refused_before_measuring(tmp_path: Path) -> None:
    binary = tmp_path / "BENCH.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    for command in (["benchmark", "speed", "--models", "unet", "--sizes", "32", "--precisions", "fp32", "--modes",
                     "forward", "--iters", "1", "--warmup", "0"], ["benchmark", "quality", "--preset", "small"]):
        proc = run_cli(*command, "--out", tmp_path / "out", "--benchmarks-md", binary)
        assert_one_line_error(proc, r"BENCH\.bin: not readable as UTF-8 markdown text")
        assert not (tmp_path / "out").exists()
    assert binary.read_bytes() == bytes(range(256)) * 4


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 16-band, 10-class mit_tiny saved as a dunemap checkpoint."""
    import torch

    from dunemap.knowledge.catalog import load_catalog
    from dunemap.models import create_model
    from dunemap.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = create_model("mit_tiny", num_classes=10, text_dim=32, in_channels=BANDS).eval()
    model.set_text(torch.nn.functional.normalize(torch.randn(10, 32), dim=1))
    catalog = load_catalog()
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pth", model, list(catalog.names),
                           [tuple(c) for c in catalog.colors])


MAP_OPTIONS = ("--window", "32", "--stride", "32", "--precision", "fp32", "--no-progress")


def test_map_pattern_into_its_own_folder_again_leaves_the_first_maps_out(tmp_path: Path, tiny_weights: Path) -> None:
    scenes = tmp_path / "scenes"
    for k in (1, 2):
        write_tif(scenes / f"s{k}.tif", unit_vectors(40, 48, seed=k))
    argv = ("map", f"{scenes}/*.tif", "--out-dir", scenes, "--weights", tiny_weights, "--confidence", "uint8",
            *MAP_OPTIONS)
    proc = run_cli(*argv)
    assert proc.returncode == 0, proc.stderr
    first = {p.name: p.read_bytes() for p in scenes.glob("s?_classes*.tif")}
    assert sorted(first) == ["s1_classes.tif", "s1_classes_confidence.tif", "s2_classes.tif",
                             "s2_classes_confidence.tif"]
    proc = run_cli(*argv, "--overwrite")  # the pattern now matches the first run's maps too
    assert proc.returncode == 0, proc.stderr
    left_out = [line for line in proc.stderr.splitlines() if "left out of the inputs" in line]
    assert len(left_out) == 4 and all("is a product of the map of" in line for line in left_out), proc.stderr
    assert {p.name: p.read_bytes() for p in scenes.glob("s?_classes*.tif")} == first  # the same maps, no others
    assert not list(scenes.glob("*_classes_classes*"))


def test_float64_beyond_float32_is_nodata_without_a_numpy_warning(tmp_path: Path, tiny_weights: Path) -> None:
    data = unit_vectors(32, 32).astype(np.float64)
    data[:, 3, 4] = 1e300  # finite in float64, inf in float32
    emb = write_tif(tmp_path / "f64.tif", data)
    proc = run_cli("map", emb, "--out", tmp_path / "m.tif", "--weights", tiny_weights, *MAP_OPTIONS)
    assert proc.returncode == 0, proc.stderr
    assert "RuntimeWarning" not in proc.stderr and "overflow" not in proc.stderr, proc.stderr
    with rasterio.open(tmp_path / "m.tif") as src:
        classes = src.read(1)
    assert classes[3, 4] == 255 and (classes != 255).sum() == 32 * 32 - 1


EVIL = """
import os, sys, torch
class Evil:
    def __reduce__(self):
        return (os.mkdir, (sys.argv[2],))
torch.save({"state_dict": {}, "payload": Evil()}, sys.argv[1])
"""


def test_a_pickle_with_code_is_refused_saying_how_to_trust_it(tmp_path: Path) -> None:
    import subprocess
    import sys

    evil, marker = tmp_path / "evil.pth", tmp_path / "pwned"
    subprocess.run([sys.executable, "-c", EVIL, evil, marker], check=True, timeout=120)
    emb = write_tif(tmp_path / "e.tif", unit_vectors(32, 32))
    for argv in (("map", emb, "--weights", evil, "--out", tmp_path / "m.tif"),
                 ("calibrate", "--weights", evil, "--data-root", tmp_path, "--out", tmp_path / "c.pth")):
        proc = run_cli(*argv)
        assert_one_line_error(proc, r"evil\.pth: holds Python objects beyond tensors \(GLOBAL posix\.mkdir\).*"
                                    r"If you trust the file's source.*state_dict")
        assert "weights_only" not in proc.stderr
    assert not marker.exists()


def test_prepare_refuses_a_raster_without_the_embedding_bands(tmp_path: Path) -> None:
    rgb = write_tif(tmp_path / "rgb.tif", np.random.default_rng(0).random((3, 64, 64), dtype=np.float32))
    emb = write_tif(tmp_path / "emb.tif", unit_vectors(64, 64))
    labels = write_tif(tmp_path / "labels.tif", np.ones((1, 64, 64), np.uint8))
    args = ("--labels", labels, "--tile", "32", "--block-tiles", "1", "--no-progress")
    proc = run_cli("prepare", "--image", rgb, *args, "--out", tmp_path / "a")
    assert_one_line_error(proc, r"rgb\.tif: has 3 band\(s\); expected 64 embedding bands \(--bands; AEF: 64\)")
    proc = run_cli("prepare", "--image", emb, "--image", rgb, *args, "--bands", str(BANDS), "--out", tmp_path / "b")
    assert_one_line_error(proc, rf"rgb\.tif: has 3 band\(s\); expected {BANDS} embedding bands")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    proc = run_cli("prepare", "--image", emb, *args, "--bands", str(BANDS), "--out", tmp_path / "c")
    assert proc.returncode == 0, proc.stderr


def test_train_refuses_a_tile_with_finite_but_huge_values_before_any_step(tmp_path: Path) -> None:
    data = write_tiny_dataset(tmp_path / "data", {"train": 2, "val": 1, "test": 1})
    tile = data / "img_dir" / "train" / "train_1.npy"
    image = np.load(tile)
    image[5, 7, 9] = 3e38  # finite in float32
    np.save(tile, image)
    proc = run_cli("train", "--data-root", data, "--save-dir", tmp_path / "RUN", "--model", "mit_tiny", "--bands",
                   str(BANDS), "--epochs", "1", "--text", "random", "--catalog", data / "catalog.yaml", "--device",
                   "cpu", "--precision", "fp32", "--no-progress")
    assert_one_line_error(proc, r"train_1\.npy: image holds 1 value\(s\) beyond \+-10000 \(largest 3e\+38\)")
    assert not (tmp_path / "RUN" / "best_model.pth").exists()


def test_map_takes_a_finite_but_huge_pixel_as_nodata_like_nan(tmp_path: Path, tiny_weights: Path) -> None:
    data = unit_vectors(32, 32)
    maps = {}
    for name, value in (("huge", 3e38), ("nan", np.nan)):
        bad = data.copy()
        bad[2, 10, 11] = value
        proc = run_cli("map", write_tif(tmp_path / f"{name}.tif", bad), "--out", tmp_path / f"{name}_map.tif",
                       "--weights", tiny_weights, *MAP_OPTIONS)
        assert proc.returncode == 0, proc.stderr
        with rasterio.open(tmp_path / f"{name}_map.tif") as src:
            maps[name] = src.read(1)
    assert maps["huge"][10, 11] == 255 and (maps["huge"] == 255).sum() == 1
    assert np.array_equal(maps["huge"], maps["nan"])  # the same pixel, the same nodata, the same neighbours


def _header_only_vrt(path: Path, size: int, bands: int, dtype: str = "Float32") -> Path:
    """A ``size`` x ``size`` raster that is only a header (a VRT without sources reads as zeros: nodata)."""
    from rasterio.crs import CRS

    band_xml = "".join(f'<VRTRasterBand dataType="{dtype}" band="{i + 1}"/>' for i in range(bands))
    path.write_text(f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}"><SRS>{CRS.from_epsg(32733).to_wkt()}'
                    f'</SRS><GeoTransform>500000, 10, 0, 7000000, 0, -10</GeoTransform>{band_xml}</VRTDataset>')
    return path


def test_every_raster_command_refuses_a_huge_header_in_one_line_naming_its_size(tmp_path: Path,
                                                                                tiny_weights: Path) -> None:
    from safety_helpers import CliServer

    emb = _header_only_vrt(tmp_path / "huge.vrt", 1_000_000, BANDS)
    classes = _header_only_vrt(tmp_path / "huge_map.vrt", 1_000_000, 1, "Byte")
    labels = write_tif(tmp_path / "labels.tif", np.zeros((1, 32, 32), np.uint8))
    size = r"1,000,000 x 1,000,000 = 1e\+12 pixels is more than the 1e\+11"
    out = tmp_path / "out"
    server = CliServer(tmp_path)
    try:
        for argv in (["map", emb, "--weights", tiny_weights, "--out", out / "m.tif"],
                     ["prepare", "--image", emb, "--labels", labels, "--bands", str(BANDS), "--out", out / "ds"],
                     ["suggest", emb, "--weights", tiny_weights, "--out", out / "p.gpkg"],
                     ["stats", classes, "--out", out / "a.csv"], ["quicklook", classes, "--out", out / "q.png"],
                     ["vectorize", classes, "--out", out / "v.gpkg"], ["sample", classes, "--n", "9", "--out",
                                                                       out / "s.gpkg"]):
            assert_one_line_error(server.run(*argv), rf"huge(_map)?\.vrt: {size}")
        for argv in (["synth", "scene", "--size", "20000", "--out", out], ["synth", "dataset", "--scene-size",
                                                                          "20000", "--out", out / "d"]):
            assert_one_line_error(server.run(*argv), r"scene size 20000x20000 would need about 194\.\d GiB of "
                                                     r"memory, more than the 2 GiB a command may use; the largest")
    finally:
        server.close()
    assert not out.exists() or not any(out.iterdir())


def test_map_of_a_million_blocks_plans_lazily_within_2_gib(tmp_path: Path, tiny_weights: Path) -> None:
    """300,000 px a side (9e10 pixels, under the limit) in 128-px blocks: 5.5 million blocks, which a plan built
    up front holds in gigabytes; the lazy plan predicts its first blocks at a few hundred MB."""
    import json
    import os
    import subprocess
    import sys
    import time

    from safety_helpers import REPO

    emb = _header_only_vrt(tmp_path / "big.vrt", 300_000, BANDS)
    out = tmp_path / "big_map.tif"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "dunemap", "map", emb, "--weights", tiny_weights, "--out", out,
                             "--block-size", "128", "--window", "64", "--stride", "64", "--precision", "fp32",
                             "--no-progress"], env=env, cwd=REPO, stderr=subprocess.PIPE, text=True)
    journal, predicted, peak_kb = out.with_name("big_map.tif.partial") / "journal.json", 0, 0
    try:
        deadline = time.monotonic() + 400
        while proc.poll() is None and predicted < 20 and time.monotonic() < deadline:
            time.sleep(1)
            status = Path(f"/proc/{proc.pid}/status").read_text()
            peak_kb = int(status.split("VmHWM:")[1].split()[0])  # the process's peak resident memory so far
            try:
                predicted = len(json.loads(journal.read_text())["predicted"])
            except (OSError, ValueError, KeyError):
                pass
    finally:
        proc.kill()
        err = proc.communicate()[1]
    assert predicted >= 20, err[-2000:]
    assert peak_kb < 2 * 1024**2, f"peak {peak_kb / 1024:.0f} MB"
