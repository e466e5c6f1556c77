"""``dunemap prepare --patches``: training tiles from labelled patches only, through the real CLI on GeoTIFFs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from PIL import Image
from pyproj import Transformer

from dunemap.data.manifest import read_manifest

UTM = "EPSG:32733"
X0, Y0, RES = 560000.0, 7300000.0, 10.0


def _box(r0: int, c0: int, r1: int, c1: int) -> shapely.Polygon:
    return shapely.box(X0 + c0 * RES, Y0 - r1 * RES, X0 + c1 * RES, Y0 - r0 * RES)


def _write(path: Path, geoms: list, fields: dict[str, list], crs: str = UTM) -> Path:
    pyogrio.raw.write(path, np.array(shapely.to_wkb(geoms), dtype=object),
                      [np.array(v, dtype=object if isinstance(v[0], str) else np.int32) for v in fields.values()],
                      list(fields), geometry_type="Polygon", crs=crs, driver="GPKG")
    return path


def _lonlat(poly: shapely.Polygon) -> shapely.Polygon:
    to_geo = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    return shapely.transform(shapely.segmentize(poly, 2.0), lambda xy: np.column_stack(to_geo.transform(*xy.T)))


@pytest.fixture()
def scene(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(6, 96, 96)).astype(np.float32)
    data[:, 80:, 80:] = np.nan  # a nodata corner
    image = tmp_path / "namib_emb.tif"
    with rasterio.open(image, "w", driver="GTiff", width=96, height=96, count=6, dtype="float32", crs=UTM,
                       transform=rasterio.Affine(RES, 0, X0, 0, -RES, Y0)) as ds:
        ds.write(data)
        ds.update_tags(REGION="namib")
    # the user's labels: class 2 over the left half of patch 1, class "star" (id 4) over all of patch 2
    labels = _write(tmp_path / "labels.gpkg", [_box(10, 10, 26, 18), _box(40, 50, 56, 66)],
                    {"class": ["2", "star"]})
    return {"image": image, "labels": labels, "root": tmp_path}


def _prepare(scene: dict[str, Path], patches: Path, out: str = "NEW") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dunemap", "prepare", "--image", str(scene["image"]), "--labels",
                           str(scene["labels"]), "--class-field", "class", "--patches", str(patches), "--out",
                           str(scene["root"] / out), "--tile", "32", "--bands", "6", "--no-progress"],
                          capture_output=True, text=True, timeout=300)


def test_tiles_come_from_the_labelled_patches_only(scene: dict[str, Path]) -> None:
    # two 16 px patches, given in lon/lat (the image is UTM): they are moved onto the image's grid
    patches = _write(scene["root"] / "patches.gpkg", [_lonlat(_box(10, 10, 26, 26)), _lonlat(_box(40, 50, 56, 66))],
                     {"rank": [1, 2]}, crs="EPSG:4326")
    proc = _prepare(scene, patches)
    assert proc.returncode == 0, proc.stderr
    out = scene["root"] / "NEW"
    records = {r.name: r for r in read_manifest(out)}
    assert sorted(records) == ["namib_emb_patch0001", "namib_emb_patch0002"]
    assert {r.split for r in records.values()} == {"train"} and {r.region for r in records.values()} == {"namib"}
    assert not list((out / "img_dir" / "val").iterdir()) and not list((out / "img_dir" / "test").iterdir())

    first = records["namib_emb_patch0001"]  # the 32 px tile centred on patch 1: rows 2-33, cols 2-33
    assert (first.row_off, first.col_off) == (2, 2)
    label = np.asarray(Image.open(out / "ann_dir" / "train" / "namib_emb_patch0001.png"))
    expected = np.full((32, 32), 255, np.uint8)
    expected[8:24, 8:16] = 2  # labelled half of the patch; the other half and the context are ignored
    np.testing.assert_array_equal(label, expected)
    image = np.load(out / "img_dir" / "train" / "namib_emb_patch0001.npy")
    with rasterio.open(scene["image"]) as src:
        np.testing.assert_array_equal(image, src.read(window=((2, 34), (2, 34))))  # context kept as it is
    second = np.asarray(Image.open(out / "ann_dir" / "train" / "namib_emb_patch0002.png"))
    assert np.count_nonzero(second == 4) == 16 * 16 and set(np.unique(second)) == {4, 255}  # star: id 4


@pytest.mark.parametrize("geoms, message", [
    ([_box(10, 10, 26, 26), _box(20, 20, 36, 36)], "patches 1 and 2 overlap"),
    ([_box(88, 10, 104, 26)], "patch 1 reaches over the edge"),
    ([_box(80, 80, 96, 96)], "patch 1 lies on nodata"),
    ([_box(60, 10, 76, 26)], "patch 1 has no label"),
])
def test_bad_patches_are_refused_in_one_line(scene: dict[str, Path], geoms: list, message: str) -> None:
    patches = _write(scene["root"] / "bad.gpkg", geoms, {"rank": list(range(1, len(geoms) + 1))})
    proc = _prepare(scene, patches, out="BAD")
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (scene["root"] / "BAD").exists()  # nothing written


def test_styled_geopackages_are_read_from_their_geometry_layer(scene: dict[str, Path]) -> None:
    """QGIS and ``dunemap suggest`` keep a style in a GeoPackage's non-spatial ``layer_styles`` table: the patches
    and the labels are read from the file's geometry layer, without a warning about several layers."""
    from dunemap.io.formats import store_layer_style

    patches = _write(scene["root"] / "patches.gpkg", [_box(10, 10, 26, 26)], {"rank": [1]})
    for path in (patches, scene["labels"]):
        store_layer_style(path, str(pyogrio.list_layers(path)[0][0]), "<!DOCTYPE qgis><qgis/>")
        assert "layer_styles" in {str(name) for name, _ in pyogrio.list_layers(path)}
    proc = _prepare(scene, patches)
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr and "layer" not in proc.stderr, proc.stderr
    tiles = sorted(p.name for p in (scene["root"] / "NEW" / "ann_dir" / "train").iterdir())
    assert tiles == ["namib_emb_patch0001.png"]
