"""Embedding input: AEF int8 and float rasters, nodata rules, bottom-up rows, VRT mosaics, bad inputs."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from mapping_helpers import UTM_TRANSFORM, smooth_unit_vectors, write_raster

from dunemap.errors import InputError
from dunemap.io.aef import dequantize, quantize
from dunemap.raster.geometry import Box
from dunemap.raster.reader import EmbeddingReader, valid_pixels


def test_aef_int8_is_dequantized_exactly_like_the_codec(tmp_path: Path) -> None:
    invalid = np.zeros((40, 30), dtype=bool)
    invalid[5:9, 3:7] = True
    q = quantize(smooth_unit_vectors(40, 30, seed=3), ~invalid)
    q[10, 12, 1] = -128  # a single band at -128 also marks the whole pixel nodata
    path = write_raster(tmp_path / "aef.tif", q, nodata=-128)
    expected, valid = dequantize(q)
    with EmbeddingReader(path) as reader:
        assert reader.is_aef and (reader.height, reader.width) == (40, 30)
        box = Box(2, 1, 30, 25)
        data = reader.read(box)
        assert data.data.dtype == np.int8  # kept compact until a window is needed
        np.testing.assert_array_equal(data.valid, valid[2:32, 1:26])
        assert not data.valid[12 - 2, 1 - 1]
        window = Box(4, 2, 20, 16)
        got = data.embeddings(window)
        assert got.dtype == np.float32 and got.shape == (64, 20, 16)
        np.testing.assert_array_equal(got, expected[:, 4:24, 2:18])


def test_float_nodata_value_nan_and_zero_vectors(tmp_path: Path) -> None:
    x = smooth_unit_vectors(20, 20, seed=1)
    x[:, 0, 0] = -9999.0
    x[7, 1, 1] = np.nan
    x[:, 2, 2] = 0.0
    path = write_raster(tmp_path / "f.tif", x, nodata=-9999.0)
    with EmbeddingReader(path) as reader:
        assert not reader.is_aef
        data = reader.read(Box(0, 0, 20, 20))
    assert data.data.dtype == np.float32
    assert not data.valid[0, 0] and not data.valid[1, 1] and not data.valid[2, 2]
    assert data.valid.sum() == 400 - 3
    assert np.isfinite(data.data).all() and (data.data[:, ~data.valid] == 0).all()
    np.testing.assert_array_equal(data.embeddings(Box(5, 5, 4, 4)), x[:, 5:9, 5:9])


def test_bottom_up_raster_reads_north_up(tmp_path: Path) -> None:
    q = quantize(smooth_unit_vectors(30, 20, seed=2))
    top = write_raster(tmp_path / "top.tif", q, nodata=-128)
    bottom = write_raster(tmp_path / "bottom.tif", q, nodata=-128, bottom_up=True)
    with rasterio.open(bottom) as src:
        assert src.transform.e > 0  # really stored south to north
    with EmbeddingReader(top) as a, EmbeddingReader(bottom) as b:
        assert b.bottom_up and not a.bottom_up
        assert b.transform.almost_equals(a.transform) and b.transform == UTM_TRANSFORM
        box = Box(3, 4, 17, 9)
        np.testing.assert_array_equal(a.read(box).data, b.read(box).data)


def test_wrong_band_count_or_dtype_names_the_file(tmp_path: Path) -> None:
    few = write_raster(tmp_path / "few.tif", np.zeros((3, 8, 8), dtype=np.float32))
    with pytest.raises(InputError, match=r"few\.tif: has 3 band\(s\); the model expects 64"):
        EmbeddingReader(few)
    ints = write_raster(tmp_path / "u16.tif", np.zeros((64, 8, 8), dtype=np.uint16))
    with pytest.raises(InputError, match=r"u16\.tif: dtype uint16 is not an embedding type"):
        EmbeddingReader(ints)
    with pytest.raises(InputError, match="missing.tif: input raster not found"):
        EmbeddingReader(tmp_path / "missing.tif")
    with EmbeddingReader(write_raster(tmp_path / "ok.tif", np.zeros((64, 8, 8), dtype=np.int8))) as reader:
        with pytest.raises(InputError, match="outside"):
            reader.read(Box(4, 4, 8, 8))


def test_mosaic_of_tiles_reads_like_the_whole(tmp_path: Path) -> None:
    q = quantize(smooth_unit_vectors(32, 48, seed=4))
    whole = write_raster(tmp_path / "whole.tif", q, nodata=-128)
    left = write_raster(tmp_path / "left.tif", np.ascontiguousarray(q[:, :, :20]), nodata=-128)
    right = write_raster(tmp_path / "right.tif", np.ascontiguousarray(q[:, 8:, 20:]), nodata=-128,
                         transform=UTM_TRANSFORM @ Affine.translation(20, 8))
    with EmbeddingReader(whole) as a, EmbeddingReader([left, right]) as b:
        assert (b.height, b.width) == (32, 48) and b.transform == a.transform and b.is_aef
        data = b.read(Box(0, 0, 32, 48))
        np.testing.assert_array_equal(data.data[:, :, :20], q[:, :, :20])
        np.testing.assert_array_equal(data.data[:, 8:, 20:], q[:, 8:, 20:])
        assert not data.valid[:8, 20:].any(), "the gap between tiles must read as nodata"
        assert data.valid[:, :20].all() and data.valid[8:, 20:].all()


def test_mosaic_rejects_mismatched_tiles(tmp_path: Path) -> None:
    a = write_raster(tmp_path / "a.tif", np.zeros((64, 8, 8), dtype=np.int8))
    b = write_raster(tmp_path / "b.tif", np.zeros((64, 8, 8), dtype=np.int8), crs="EPSG:32734")
    with pytest.raises(InputError, match=r"b\.tif: CRS .* differs"):
        EmbeddingReader([a, b])
    shifted = write_raster(tmp_path / "s.tif", np.zeros((64, 8, 8), dtype=np.int8),
                           transform=UTM_TRANSFORM @ Affine.translation(8.5, 0))
    with pytest.raises(InputError, match=r"s\.tif: not on the first tile's pixel grid"):
        EmbeddingReader([a, shifted])


def test_reader_pickles_for_workers(tmp_path: Path) -> None:
    q = quantize(smooth_unit_vectors(16, 16, seed=5))
    path = write_raster(tmp_path / "p.tif", q, nodata=-128)
    with EmbeddingReader(path) as reader:
        reader.read(Box(0, 0, 4, 4))
        clone = pickle.loads(pickle.dumps(reader))
    with clone:
        np.testing.assert_array_equal(clone.read(Box(0, 0, 16, 16)).data, q)


@pytest.mark.parametrize("nodata", [None, -128.0, 5.0, 0.0, 300.0, 2.5, float("nan")])
def test_valid_pixels_of_int8_codes_follow_the_rule_band_by_band(nodata) -> None:
    """The int8 rule, computed band by band, is the rule written with whole-array reductions: no -128 in any band,
    no band equal to a declared integer nodata in int8's range, not every band zero, inside the mask."""
    rng = np.random.default_rng(0)
    codes = rng.integers(-128, 128, (8, 30, 40), dtype=np.int8)
    codes[:, rng.random((30, 40)) < 0.3] = rng.choice([1, 5, -3], (8, 1))  # few values: nodata matches often
    codes[:, 2, :5] = 0  # all-zero pixels
    mask = rng.random((30, 40)) > 0.1
    want = ~(codes == -128).any(axis=0) & codes.any(axis=0)
    if nodata is not None and np.isfinite(nodata) and nodata.is_integer() and -128 <= nodata <= 127:
        want &= ~(codes == int(nodata)).any(axis=0)
    assert np.array_equal(valid_pixels(codes, nodata), want)
    got = valid_pixels(codes, nodata, mask)
    assert got.dtype == bool and np.array_equal(got, want & mask)
