"""GeoTIFF and hillshade outputs of synthetic scenes, read back with rasterio and PIL."""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio
from PIL import Image

from dunemap.errors import ConfigError
from dunemap.io.aef import dequantize
from dunemap.synth.scene import SceneConfig, generate_scene
from dunemap.synth.writers import write_hillshade_png, write_scene_files, write_scene_geotiff


@pytest.fixture(scope="module")
def scene():
    return generate_scene(SceneConfig(size=(80, 112), region="mojave", seed=1, nodata_holes=True, region_px=48))


def test_float_geotiff_holds_the_embeddings_on_the_label_grid(scene, tmp_path, caplog):
    with caplog.at_level("INFO", logger="rasterio"):
        img, lbl = write_scene_geotiff(scene, tmp_path / "e.tif", tmp_path / "l.tif")
    assert not [r for r in caplog.records if "GDAL signalled an error" in r.getMessage()]  # e.g. a late palette
    with rasterio.open(img) as e, rasterio.open(lbl) as l:
        assert e.count == 64 and e.dtypes[0] == "float32" and math.isnan(e.nodata)
        assert e.crs.to_epsg() == 32611 and e.transform == scene.transform == l.transform
        # the embeddings as dunemap writes them all (embedding_creation): pixel-interleaved ZSTD; labels in DEFLATE
        assert e.block_shapes[0] == (256, 256) and e.compression.name.lower() == "zstd"
        assert e.interleaving.name.lower() == "pixel" and e.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "3"
        assert l.compression.name.lower() == "deflate"
        assert e.descriptions[0] == "A00" and e.descriptions[63] == "A63"
        data = e.read()
        assert l.count == 1 and l.dtypes[0] == "uint8" and l.nodata == 255
        assert l.colorinterp[0] == rasterio.enums.ColorInterp.palette
        labels = l.read(1)
    np.testing.assert_array_equal(labels, scene.label)
    np.testing.assert_array_equal(data[:, scene.valid], scene.embedding[:, scene.valid])
    assert np.isnan(data[:, ~scene.valid]).all()


def test_int8_geotiff_uses_the_aef_codec(scene, tmp_path):
    img, _ = write_scene_geotiff(scene, tmp_path / "e.tif", tmp_path / "l.tif", dtype="int8")
    with rasterio.open(img) as e:
        assert e.dtypes[0] == "int8" and e.nodata == -128
        q = e.read()
    values, valid = dequantize(q)
    np.testing.assert_array_equal(valid, scene.valid)
    # The codec's error is at most half a quantisation step of sqrt-space; norms stay close to one.
    assert np.abs(values[:, valid] - scene.embedding[:, valid]).max() < 0.02
    np.testing.assert_allclose(np.linalg.norm(values[:, valid], axis=0), 1.0, atol=0.03)


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_bottom_up_output_has_positive_pixel_height_and_flips_back(scene, tmp_path, dtype):
    top = write_scene_geotiff(scene, tmp_path / "t.tif", tmp_path / "tl.tif", dtype=dtype)
    bot = write_scene_geotiff(scene, tmp_path / "b.tif", tmp_path / "bl.tif", dtype=dtype, bottom_up=True)
    for t_path, b_path in zip(top, bot):
        with rasterio.open(t_path) as t, rasterio.open(b_path) as b:
            assert t.transform.e == -10.0 and b.transform.e == 10.0
            assert b.transform.f == t.transform.f - 10.0 * t.height  # origin moves to the southern edge
            assert b.transform.c == t.transform.c
            np.testing.assert_array_equal(b.read()[:, ::-1, :], t.read())
            assert sorted((b.bounds.bottom, b.bounds.top)) == sorted((t.bounds.bottom, t.bounds.top))  # same ground


def test_unknown_dtype_lists_the_valid_ones(scene, tmp_path):
    with pytest.raises(ConfigError, match="unknown embedding dtype 'float16'; valid: float32, int8"):
        write_scene_geotiff(scene, tmp_path / "e.tif", tmp_path / "l.tif", dtype="float16")
    assert list(tmp_path.iterdir()) == []


def test_hillshade_png_shows_relief_and_the_overlay_shows_classes(scene, tmp_path):
    plain = np.asarray(Image.open(write_hillshade_png(scene, tmp_path / "h.png")))
    tinted = np.asarray(Image.open(write_hillshade_png(scene, tmp_path / "o.png", overlay_labels=True)))
    assert plain.shape == tinted.shape == (80, 112, 3) and plain.dtype == np.uint8
    assert plain[scene.valid].std() > 5  # dunes make light and shadow
    assert (plain[..., 0] == plain[..., 2]).all()  # plain hillshade is grey
    assert np.abs(tinted[..., 0].astype(int) - tinted[..., 2]).max() > 20  # the overlay is coloured
    assert plain[~scene.valid].mean() < plain[scene.valid].mean()  # holes are darkened


def test_write_scene_files_names_outputs_by_region_and_seed(tmp_path):
    files = write_scene_files(SceneConfig(size=(40, 40), region="namib", seed=5), tmp_path / "out", dtype="int8")
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["namib_5_emb.tif", "namib_5_hillshade.png", "namib_5_labels.qml", "namib_5_labels.tif",
                     "namib_5_labels.tif.aux.xml", "namib_5_overlay.png"]  # the labels with their legend companions
    assert [p.name for p in files.paths()] == ["namib_5_emb.tif", "namib_5_labels.tif", "namib_5_hillshade.png",
                                                "namib_5_overlay.png"]
