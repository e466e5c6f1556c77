"""prepare_dataset on real GeoTIFFs and GeoPackages written here: tiles, labels, manifest, reprojection, errors."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from affine import Affine
from PIL import Image
from pyproj import Transformer
from rasterio.features import rasterize
from rasterio.windows import Window
from rasterio.windows import transform as rasterio_window_transform

from dunemap.data.labels import class_id_for
from dunemap.data.manifest import read_manifest
from dunemap.data.prepare import PrepareConfig, prepare_dataset
from dunemap.errors import InputError, RasterIOError
from dunemap.io.aef import dequantize, quantize
from dunemap.knowledge.catalog import load_catalog
from dunemap.raster.geometry import window_starts
from dunemap.raster.transform import north_up_transform, source_rows

UTM = "EPSG:32733"
ORIGIN = (560000.0, 7300000.0)  # Namib, UTM 33S
RES = 10.0


def write_float_image(path: Path, height: int = 64, width: int = 64, bands: int = 6, seed: int = 0,
                      origin: tuple[float, float] = ORIGIN) -> np.ndarray:
    data = np.random.default_rng(seed).normal(size=(bands, height, width)).astype(np.float32)
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=bands, dtype="float32",
                       crs=UTM, transform=Affine(RES, 0, origin[0], 0, -RES, origin[1])) as ds:
        ds.write(data)
    return data


def write_polygons(path: Path, polygons: list, classes: list, crs: str = UTM) -> None:
    pyogrio.raw.write(path, np.array(shapely.to_wkb(polygons), dtype=object),
                      [np.array(classes, dtype=object)], ["class"], geometry_type="Polygon", crs=crs, driver="GPKG")


def pixel_box(row0: int, col0: int, row1: int, col1: int, origin: tuple[float, float] = ORIGIN):
    """Polygon covering pixels [row0, row1) x [col0, col1) of a north-up grid at ``origin``."""
    x0, y0 = origin
    return shapely.box(x0 + col0 * RES, y0 - row1 * RES, x0 + col1 * RES, y0 - row0 * RES)


def window_transform(window: Window, transform: Affine) -> Affine:
    """rasterio.windows.transform, whose internal ``*`` on Affine warns (PendingDeprecationWarning) under affine 3."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        return rasterio_window_transform(window, transform)


def parse_transform(text: str) -> Affine:
    return Affine(*[float(v) for v in text.split()])


def load_tile(root: Path, split: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    img = np.load(root / "img_dir" / split / f"{name}.npy")
    lbl = np.array(Image.open(root / "ann_dir" / split / f"{name}.png"))
    return img, lbl


def test_tile_offsets_cover_axis_with_full_tiles():
    assert window_starts(64, 16, 16) == [0, 16, 32, 48]
    assert window_starts(70, 16, 16) == [0, 16, 32, 48, 54]
    assert window_starts(40, 16, 8) == [0, 8, 16, 24]
    assert window_starts(10, 16, 16) == [0]
    for size, tile, stride in [(100, 32, 20), (513, 512, 256), (33, 8, 3)]:
        offs = window_starts(size, tile, stride)
        assert offs[0] == 0 and offs[-1] + tile == size
        assert all(0 < b - a <= stride for a, b in zip(offs, offs[1:]))


def test_north_up_transform_and_source_rows():
    bottom_up = Affine(10, 0, 500000, 0, 10, 7000000)
    nu = north_up_transform(bottom_up, 100)
    assert nu == Affine(10, 0, 500000, 0, -10, 7001000)
    assert north_up_transform(nu, 100) == nu
    assert source_rows(0, 16, 100, bottom_up=True) == 84
    assert source_rows(20, 16, 100, bottom_up=False) == 20
    with pytest.raises(InputError, match="rotated"):
        north_up_transform(Affine(10, 1, 0, 0, -10, 0), 10)


def test_class_id_for_accepts_ids_names_and_labels():
    cat = load_catalog()
    names, labels = cat.names, cat.labels
    assert class_id_for(3, names) == 3
    assert class_id_for("3", names) == 3
    assert class_id_for(4.0, names) == 4
    assert class_id_for("Sand Sheet", names, labels) == names.index("sand_sheet")
    assert class_id_for("Crescentic (barchan)", names, labels) == names.index("crescentic")
    assert class_id_for("barchan-dunes", names, labels) is None
    assert class_id_for(10, names) is None
    assert class_id_for(2.5, names) is None


def test_prepare_float_image_with_geopackage(tmp_path):
    img_path = tmp_path / "emb.tif"
    data = write_float_image(img_path)
    with rasterio.open(img_path, "r+") as ds:  # a nodata hole: NaN in one band only
        data[2, 40:44, 5:9] = np.nan
        ds.write(data)
    gpkg = tmp_path / "labels.gpkg"
    write_polygons(gpkg, [pixel_box(0, 0, 32, 32), pixel_box(0, 32, 64, 64), pixel_box(16, 16, 24, 40)],
                   ["linear", "8", "Star"])
    out = tmp_path / "ds"
    summary = prepare_dataset(PrepareConfig(in_channels=6, images=[img_path], labels=[gpkg], out=out, tile=16,
                                            min_valid=0.0, block_tiles=1, split=(0.5, 0.25, 0.25), seed=3))

    expected = np.full((64, 64), 255, dtype=np.uint8)
    expected[0:32, 0:32] = 3
    expected[:, 32:] = 8
    expected[16:24, 16:40] = 4  # the later polygon wins where they overlap
    expected[40:44, 5:9] = 255
    clean = np.nan_to_num(data, nan=0.0)
    clean[:, 40:44, 5:9] = 0.0

    records = read_manifest(out)
    assert len(records) == summary.total_tiles == 16
    with rasterio.open(img_path) as src:
        for rec in records:
            assert rec.region == "emb" and rec.crs == UTM and Path(rec.source) == img_path.resolve()
            assert (rec.height, rec.width) == (16, 16)
            window = Window(rec.col_off, rec.row_off, rec.width, rec.height)
            assert parse_transform(rec.transform) == window_transform(window, src.transform)
            img, lbl = load_tile(out, rec.split, rec.name)
            assert img.dtype == np.float32 and img.shape == (6, 16, 16)
            sl = np.s_[rec.row_off:rec.row_off + 16, rec.col_off:rec.col_off + 16]
            np.testing.assert_array_equal(img, clean[(slice(None),) + sl])
            np.testing.assert_array_equal(lbl, expected[sl])
    saved = json.loads((out / "summary.json").read_text())
    assert saved["tiles"] == summary.tiles and sum(saved["tiles"].values()) == 16
    pixels = np.zeros(10, dtype=np.int64)
    for split in ("train", "val", "test"):
        pixels += saved["class_pixels"][split]
        if sum(saved["class_pixels"][split]):
            assert sum(saved["class_fraction"][split]) == pytest.approx(1.0)
    np.testing.assert_array_equal(pixels, np.bincount(expected[expected != 255], minlength=10))
    assert not any(p.name.startswith(".prepare") for p in out.iterdir())


def test_prepare_skips_unlabelled_tiles(tmp_path):
    img_path = tmp_path / "emb.tif"
    write_float_image(img_path, height=32, width=32)
    gpkg = tmp_path / "labels.gpkg"
    write_polygons(gpkg, [pixel_box(0, 0, 16, 16), pixel_box(16, 16, 32, 24)], [1, 2])  # second covers half a tile
    summary = prepare_dataset(PrepareConfig(in_channels=6, images=[img_path], labels=[gpkg], out=tmp_path / "ds",
                                            tile=16, min_valid=0.5, block_tiles=1, split=(1.0, 0.0, 0.0)))
    assert summary.tiles == {"train": 2, "val": 0, "test": 0} and summary.skipped_nodata == 2
    assert sorted((r.row_off, r.col_off) for r in read_manifest(tmp_path / "ds")) == [(0, 0), (16, 16)]


def test_prepare_bottom_up_aef_with_label_raster(tmp_path):
    h, w, bands = 32, 48, 4
    rng = np.random.default_rng(1)
    vec = rng.normal(size=(bands, h, w)).astype(np.float32)
    vec /= np.linalg.norm(vec, axis=0, keepdims=True)
    valid = np.ones((h, w), dtype=bool)
    valid[3:6, 10:14] = False  # stored rows 3..5 = north-up rows 26..28
    q = quantize(vec, valid)
    labels = rng.integers(0, 10, size=(h, w)).astype(np.uint8)
    labels[0, :] = 255
    bottom_up = Affine(RES, 0, ORIGIN[0], 0, RES, ORIGIN[1])
    img_path, lbl_path = tmp_path / "aef.tif", tmp_path / "labels.tif"
    profile = dict(driver="GTiff", width=w, height=h, crs=UTM, transform=bottom_up)
    with rasterio.open(img_path, "w", count=bands, dtype="int8", nodata=-128, **profile) as ds:
        ds.write(q)
    with rasterio.open(lbl_path, "w", count=1, dtype="uint8", nodata=255, **profile) as ds:
        ds.write(labels[None])
    out = tmp_path / "ds"
    prepare_dataset(PrepareConfig(in_channels=4, images=[img_path], labels=[lbl_path], out=out, tile=16, min_valid=0.0,
                                  regions=["namib"], block_tiles=1))
    values, mask = dequantize(q)
    nu_values, nu_labels = values[:, ::-1], labels[::-1].copy()
    nu_labels[~mask[::-1]] = 255
    nu = north_up_transform(bottom_up, h)
    records = read_manifest(out)
    assert len(records) == 6
    for rec in records:
        assert rec.region == "namib"
        r_nu = h - rec.row_off - rec.height  # manifest windows are in stored (bottom-up) rows
        assert parse_transform(rec.transform) == window_transform(Window(rec.col_off, r_nu, 16, 16), nu)
        img, lbl = load_tile(out, rec.split, rec.name)
        sl = np.s_[r_nu:r_nu + 16, rec.col_off:rec.col_off + 16]
        np.testing.assert_array_equal(img, nu_values[(slice(None),) + sl])
        np.testing.assert_array_equal(lbl, nu_labels[sl])
        with rasterio.open(img_path) as src:  # the stored window, flipped, is the tile
            raw = src.read(window=Window(rec.col_off, rec.row_off, 16, 16))
        np.testing.assert_array_equal(img, dequantize(raw[:, ::-1])[0])
    assert (nu_labels[26:29, 10:14] == 255).all()


def test_prepare_reprojects_wgs84_polygons(tmp_path):
    img_path = tmp_path / "emb.tif"
    write_float_image(img_path, height=48, width=48)
    utm_polys = [shapely.Polygon([(ORIGIN[0] + 35, ORIGIN[1] - 45), (ORIGIN[0] + 400, ORIGIN[1] - 95),
                                  (ORIGIN[0] + 300, ORIGIN[1] - 420), (ORIGIN[0] + 52, ORIGIN[1] - 330)]),
                 pixel_box(30, 30, 46, 47)]
    to_wgs = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    wgs_polys = [shapely.transform(shapely.segmentize(p, 5.0), lambda c: np.column_stack(to_wgs.transform(c[:, 0], c[:, 1])))
                 for p in utm_polys]
    gpkg = tmp_path / "wgs84.gpkg"
    write_polygons(gpkg, wgs_polys, ["dome", "parabolic"], crs="EPSG:4326")
    out = tmp_path / "ds"
    prepare_dataset(PrepareConfig(in_channels=6, images=[img_path], labels=[gpkg], out=out, tile=16, min_valid=0.0,
                                  block_tiles=1))
    with rasterio.open(img_path) as src:
        expected = rasterize([(utm_polys[0], 5), (utm_polys[1], 6)], out_shape=(48, 48), transform=src.transform,
                             fill=255, dtype="uint8")
    assert (expected == 5).sum() > 300 and (expected == 6).sum() == 16 * 17
    got = np.full((48, 48), 0, dtype=np.uint8)
    for rec in read_manifest(out):
        got[rec.row_off:rec.row_off + 16, rec.col_off:rec.col_off + 16] = load_tile(out, rec.split, rec.name)[1]
    np.testing.assert_array_equal(got, expected)


def test_label_raster_on_another_grid_errors_naming_both(tmp_path):
    img_path = tmp_path / "emb.tif"
    write_float_image(img_path, height=32, width=32)
    lbl_path = tmp_path / "shifted_labels.tif"
    with rasterio.open(lbl_path, "w", driver="GTiff", width=32, height=32, count=1, dtype="uint8", crs=UTM,
                       transform=Affine(RES, 0, ORIGIN[0] + 5, 0, -RES, ORIGIN[1])) as ds:
        ds.write(np.zeros((1, 32, 32), dtype=np.uint8))
    out = tmp_path / "ds"
    with pytest.raises(InputError) as err:
        prepare_dataset(PrepareConfig(in_channels=6, images=[img_path], labels=[lbl_path], out=out, tile=16))
    msg = str(err.value)
    assert str(lbl_path) in msg and str(img_path) in msg and "grid" in msg and "\n" not in msg
    assert not out.exists()  # nothing left behind, not even the folder
    out.mkdir()
    (out / "notes.txt").write_text("kept")
    with pytest.raises(InputError):
        prepare_dataset(PrepareConfig(in_channels=6, images=[img_path], labels=[lbl_path], out=out, tile=16))
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_unknown_class_name_lists_valid_names(tmp_path):
    img_path = tmp_path / "emb.tif"
    write_float_image(img_path, height=16, width=16)
    gpkg = tmp_path / "labels.gpkg"
    write_polygons(gpkg, [pixel_box(0, 0, 8, 8)], ["yardang"])
    with pytest.raises(InputError, match=r"'yardang'.*interdune, crescentic"):
        prepare_dataset(PrepareConfig(in_channels=6, images=[img_path], labels=[gpkg], out=tmp_path / "ds", tile=16))
    with pytest.raises(InputError, match="no field 'kind'; fields: class"):
        prepare_dataset(PrepareConfig(in_channels=6, images=[img_path], labels=[gpkg], out=tmp_path / "ds", tile=16,
                                      class_field="kind"))


def test_missing_image_is_a_clear_error(tmp_path):
    gpkg = tmp_path / "labels.gpkg"
    write_polygons(gpkg, [pixel_box(0, 0, 8, 8)], ["dome"])
    (tmp_path / "broken.tif").write_bytes(b"not a tiff")
    with pytest.raises(InputError, match="nope.tif: file not found"):
        prepare_dataset(PrepareConfig(images=[tmp_path / "nope.tif"], labels=[gpkg], out=tmp_path / "ds"))
    with pytest.raises(RasterIOError, match="broken.tif: cannot open image"):
        prepare_dataset(PrepareConfig(images=[tmp_path / "broken.tif"], labels=[gpkg], out=tmp_path / "ds"))


def test_labels_missing_the_image_error(tmp_path):
    img_path = tmp_path / "emb.tif"
    write_float_image(img_path, height=32, width=32)
    gpkg = tmp_path / "far.gpkg"
    write_polygons(gpkg, [pixel_box(0, 0, 8, 8, origin=(ORIGIN[0] + 50000, ORIGIN[1]))], ["dome"])
    out = tmp_path / "ds"
    with pytest.raises(InputError, match=r"no tile of .*emb.tif.*4 tried.*overlap"):
        prepare_dataset(PrepareConfig(in_channels=6, images=[img_path], labels=[gpkg], out=out, tile=16))
    assert not out.exists()
