"""Whole-raster mapping with real mit_tiny checkpoints: blending, georeferencing, nodata, paths, CLI."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
from affine import Affine
import pytest
import rasterio
import rasterio.shutil
import torch
from mapping_helpers import UTM_TRANSFORM, smooth_unit_vectors, write_raster
from rio_cogeo.cogeo import cog_validate

from dunemap.cli import main
from dunemap.io.aef import dequantize, quantize
from dunemap.mapping.engine import MapConfig, make_assembler, map_fingerprint, map_raster, plan_map, predictor_legend
from dunemap.mapping.predict import predict_block
from dunemap.models.checkpoint import load_checkpoint
from dunemap.raster.geometry import Box, window_starts
from dunemap.raster.reader import EmbeddingReader
from dunemap.raster.tags import model_tags
from dunemap.runtime import load_predictor

QUIET = dict(progress=False)


def _one_pass(predictor, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Softmax of the model over the whole raster at once, and the valid mask."""
    with EmbeddingReader(path) as reader:
        box = Box(0, 0, reader.height, reader.width)
        data = reader.read(box)
        x = torch.from_numpy(data.embeddings(box))[None]
    return torch.softmax(predictor.predict(x), dim=1)[0].numpy(), data.valid


def test_map_equals_one_pass_of_the_model_away_from_edges(tmp_path: Path, aef_raster, local_checkpoint: Path) -> None:
    path = aef_raster(192, 160)
    predictor = load_predictor(local_checkpoint, precision="fp32")
    full, _ = _one_pass(predictor, path)
    inner = np.s_[:, 32:-32, 32:-32]
    errors = {}
    for blend in ("gaussian", "uniform"):
        config = MapConfig(window=64, stride=32, block_size=64, blend=blend, probabilities="float32", **QUIET)
        result = map_raster(path, predictor, tmp_path / f"{blend}.tif", config)
        with rasterio.open(result.products["probabilities"]) as src:
            probs = src.read()
        with rasterio.open(result.path) as src:
            classes = src.read(1)
        errors[blend] = np.abs(probs - full)[inner]
        if blend == "gaussian":
            assert errors[blend].max() < 0.02
            assert (classes[32:-32, 32:-32] == full.argmax(axis=0)[32:-32, 32:-32]).mean() > 0.999
    # window edges see zero padding: plain averaging lets that through, the Gaussian blend suppresses it
    assert errors["gaussian"].mean() * 5 < errors["uniform"].mean()


def test_raster_smaller_than_a_window_is_one_pass_exactly(tmp_path: Path, aef_raster, tiny_checkpoint: Path) -> None:
    path = aef_raster(48, 40)
    predictor = load_predictor(tiny_checkpoint, precision="fp32")
    full, _ = _one_pass(predictor, path)
    result = map_raster(path, predictor, tmp_path / "map.tif", MapConfig(window=64, stride=32, **QUIET))
    assert result.windows_predicted == 1
    with rasterio.open(result.path) as src:
        np.testing.assert_array_equal(src.read(1), full.argmax(axis=0))


def test_confidence_is_the_calibrated_max_probability(tmp_path: Path, aef_raster, local_checkpoint: Path) -> None:
    """A checkpoint calibrated with T = 2.5: the Predictor's and ``dunemap map --confidence float32``'s confidence
    is max softmax(logits / T) of the raw model, not of the logits themselves."""
    temperature = 2.5
    saved = torch.load(local_checkpoint, weights_only=True)
    saved["calibration"] = {"temperature": temperature, "split": "val"}
    calibrated = tmp_path / "calibrated.pth"
    torch.save(saved, calibrated)
    path = aef_raster(48, 40)  # smaller than one window: one pass of the model, nothing blended
    with rasterio.open(path) as src:
        x = torch.from_numpy(dequantize(src.read())[0])[None]
    with torch.no_grad():
        logits = load_checkpoint(local_checkpoint).model(x)
    expected = torch.softmax(logits / temperature, dim=1).amax(dim=1)[0].numpy()
    raw = torch.softmax(logits, dim=1).amax(dim=1)[0].numpy()
    atol = 1e-4  # float32 rounding of channels-last against plain layout, logits of a 20x scaled classifier
    assert np.abs(raw - expected).max() > 100 * atol  # far beyond the tolerance: ignoring T cannot pass

    predictor = load_predictor(calibrated, precision="fp32")
    assert predictor.temperature == temperature
    got = torch.softmax(predictor.predict(x), dim=1).amax(dim=1)[0].numpy()
    np.testing.assert_allclose(got, expected, atol=atol)

    out = tmp_path / "map.tif"
    proc = subprocess.run([sys.executable, "-m", "dunemap", "map", str(path), "--weights", str(calibrated), "--out",
                           str(out), "--window", "64", "--stride", "32", "--confidence", "float32", "--precision",
                           "fp32", "--device", "cpu", "--no-progress"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with rasterio.open(tmp_path / "map_confidence.tif") as src:
        confidence = src.read(1)
    np.testing.assert_allclose(confidence, expected, atol=atol)


def test_grid_nodata_and_skipped_windows(tmp_path: Path, aef_raster, tiny_checkpoint: Path) -> None:
    invalid = np.zeros((96, 80), dtype=bool)
    invalid[:70, :] = True  # the top 70 rows are nodata: windows there never reach the model
    invalid[80, 5] = True
    path = aef_raster(96, 80, invalid=invalid)
    predictor = load_predictor(tiny_checkpoint, precision="fp32")
    result = map_raster(path, predictor, tmp_path / "map.tif",
                        MapConfig(window=32, stride=16, block_size=32, confidence="float32", **QUIET))
    rows, cols = window_starts(96, 32, 16), window_starts(80, 32, 16)
    with_data = sum(1 for r in rows for c in cols if not invalid[r : r + 32, c : c + 32].all())
    assert result.windows_predicted == with_data
    assert result.windows_skipped == len(rows) * len(cols) - with_data > 0
    assert result.valid_pixels == (~invalid).sum()
    with rasterio.open(result.path) as src:
        assert src.crs.to_epsg() == 32733 and src.transform == UTM_TRANSFORM
        assert src.nodata == 255
        classes = src.read(1)
    np.testing.assert_array_equal(classes == 255, invalid)
    assert classes[~invalid].max() < 10
    with rasterio.open(result.products["confidence"]) as src:
        conf = src.read(1)
    assert np.isnan(conf[invalid]).all() and (conf[~invalid] >= 0.1).all() and (conf[~invalid] <= 1).all()
    ok, errors, _ = cog_validate(str(result.path), quiet=True)
    assert ok, errors
    assert not (tmp_path / "map.tif.partial").exists()


def test_bottom_up_input_maps_like_its_top_down_twin(tmp_path: Path, aef_raster, tiny_checkpoint: Path) -> None:
    top = aef_raster(96, 80, name="top.tif")
    bottom = aef_raster(96, 80, name="bottom.tif", bottom_up=True)
    predictor = load_predictor(tiny_checkpoint, precision="fp32")
    config = MapConfig(window=64, stride=32, block_size=48, **QUIET)
    a = map_raster(top, predictor, tmp_path / "a.tif", config)
    b = map_raster(bottom, predictor, tmp_path / "b.tif", config)
    with rasterio.open(a.path) as sa, rasterio.open(b.path) as sb:
        assert sb.transform == sa.transform == UTM_TRANSFORM
        np.testing.assert_array_equal(sa.read(1), sb.read(1))
    assert a.path.read_bytes() == b.path.read_bytes()


def test_per_block_then_assemble_is_byte_identical(tmp_path: Path, aef_raster, tiny_checkpoint: Path) -> None:
    path = aef_raster(96, 80)
    predictor = load_predictor(tiny_checkpoint, precision="fp32")
    config = MapConfig(window=32, stride=24, block_size=32, confidence="uint8", **QUIET)
    streamed = map_raster(path, predictor, tmp_path / "streamed.tif", config)

    # the distributed shape of the same work: independent block tasks in any order, one assembler
    with EmbeddingReader(path) as reader:
        plan = plan_map(reader, config)
        out = tmp_path / "assembled.tif"
        assembler = make_assembler(out, plan, predictor_legend(predictor), config,
                                   map_fingerprint([path], plan, predictor, config), predictor.precision,
                                   model=model_tags(predictor))
        assembler.open(resume=False)
        tasks = list(assembler.pending())  # a lazy sequence: a list to shuffle
        assert len(plan.blocks) == 9 and len(tasks) == 6  # the last block column owns no window start
        assert sum(len(b.windows) for b in tasks) == len(window_starts(96, 32, 24)) * len(window_starts(80, 32, 24))
        random.Random(0).shuffle(tasks)
        written = []
        for block in tasks:
            written.extend(assembler.add(predict_block(reader, predictor, block, config)))
        assert sorted(written) == list(range(len(plan.blocks)))
        products = assembler.finalize()
    assert products["classes"].read_bytes() == streamed.path.read_bytes()
    assert products["confidence"].read_bytes() == streamed.products["confidence"].read_bytes()


def test_float_input_and_tile_mosaic_map_like_aef(tmp_path: Path, tiny_checkpoint: Path) -> None:
    q = quantize(smooth_unit_vectors(64, 96, seed=7))
    aef = write_raster(tmp_path / "aef.tif", q, nodata=-128)
    floats = write_raster(tmp_path / "float.tif", dequantize(q)[0])  # Earth Engine style float export
    left = write_raster(tmp_path / "left.tif", np.ascontiguousarray(q[:, :, :40]), nodata=-128)
    right = write_raster(tmp_path / "right.tif", np.ascontiguousarray(q[:, :, 40:]), nodata=-128,
                         transform=UTM_TRANSFORM @ rasterio.Affine.translation(40, 0))
    predictor = load_predictor(tiny_checkpoint, precision="fp32")
    config = MapConfig(window=32, stride=32, **QUIET)
    ref = map_raster(aef, predictor, tmp_path / "ref.tif", config)
    for name, source in (("float", floats), ("mosaic", [left, right])):
        got = map_raster(source, predictor, tmp_path / f"map_{name}.tif", config)
        assert got.path.read_bytes() == ref.path.read_bytes(), name
    assert not (tmp_path / "map_mosaic.tif.partial").exists()


def test_cli_maps_and_reports(tmp_path: Path, aef_raster, tiny_checkpoint: Path, capsys) -> None:
    path = aef_raster(64, 64)
    out = tmp_path / "maps" / "desert.tif"
    code = main(["map", str(path), "--weights", str(tiny_checkpoint), "--out", str(out), "--window", "32",
                 "--stride", "32", "--precision", "fp32", "--confidence", "uint8", "--no-progress", "--threads", "1"])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "desert_confidence.tif" in printed
    assert sorted(p.name for p in out.parent.iterdir()) == ["desert.qml", "desert.tif", "desert.tif.aux.xml",
                                                             "desert_confidence.tif"]


@pytest.mark.parametrize(("make_input", "message"), [
    (lambda d: write_raster(d / "rgb.tif", np.zeros((3, 16, 16), dtype=np.uint8)), "rgb.tif: has 3 band(s); the model expects 64"),
    (lambda d: d / "absent.tif", "absent.tif: input raster not found"),
])
def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, tiny_checkpoint: Path, capsys,
                                                      make_input, message) -> None:
    src = make_input(tmp_path)
    out = tmp_path / "out" / "map.tif"
    code = main(["map", str(src), "--weights", str(tiny_checkpoint), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err.startswith("dunemap: error:") and message in err and len(err.splitlines()) == 1
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_decoding_ahead_in_a_thread_gives_the_same_bytes(tmp_path: Path, aef_raster, tiny_checkpoint: Path) -> None:
    path = aef_raster(160, 128)
    predictor = load_predictor(tiny_checkpoint, precision="fp32")
    outs = []
    for prefetch in (True, False):  # block of 128 px, 5 x 4 windows of 48 at stride 24: many batches per block
        config = MapConfig(window=48, stride=24, block_size=128, batch_size=2, prefetch=prefetch, **QUIET)
        outs.append(map_raster(path, predictor, tmp_path / f"map_{prefetch}.tif", config).path.read_bytes())
    assert outs[0] == outs[1]


def _empty_aef_cog(path: Path, height: int, width: int) -> Path:
    """A 64-band int8 GeoTIFF of 512 px blocks with no block written (sparse): only its header is ever read."""
    with rasterio.open(path, "w", driver="GTiff", height=height, width=width, count=64, dtype="int8", nodata=-128,
                       tiled=True, blockxsize=512, blockysize=512, sparse_ok=True, crs="EPSG:32633",
                       transform=UTM_TRANSFORM):
        pass
    return path


@pytest.mark.parametrize("width, blocks_across", [(2048, 5), (1000, 3), (8192, 17)])
def test_the_read_cache_holds_a_row_of_map_blocks_stored_blocks(tmp_path: Path, width: int,
                                                                 blocks_across: int) -> None:
    from dunemap.mapping.predict import GDAL_READ_CACHE_BYTES, GDAL_READ_CACHE_MAX_BYTES, read_layout
    from dunemap.mapping.windows import plan_blocks

    with EmbeddingReader(_empty_aef_cog(tmp_path / "e.tif", 3000, width)) as reader:
        blocks = plan_blocks(reader.height, reader.width, 512, 384, 1024)
        # a block row reads 1024 + 128 rows: up to 4 rows of stored blocks, one more the next row starts in
        band = 5 * blocks_across * 512 * 512 * 64
        expected = (max(band, GDAL_READ_CACHE_BYTES), 0)  # row by row across the grid
        if band > GDAL_READ_CACHE_MAX_BYTES:  # vertical bands of 2 block columns: 2432 px, 6 stored blocks across
            expected = (5 * 6 * 512 * 512 * 64, 2)
        assert read_layout(reader, blocks, remote=True) == expected  # as over HTTP
        assert read_layout(reader, blocks) == (GDAL_READ_CACHE_BYTES, 0)  # a local file: the page cache re-reads
    assert {2048: band, 1000: GDAL_READ_CACHE_BYTES, 8192: 5 * 6 * 512 * 512 * 64}[width] == expected[0]


@pytest.mark.parametrize("compress, bottom_up", [("zstd", False), ("deflate", True)])
def test_local_geotiffs_are_read_past_the_block_cache_with_the_same_codes(tmp_path: Path, compress: str,
                                                                          bottom_up: bool) -> None:
    """Blocks of a local, tiled, pixel-interleaved int8 GeoTIFF (north-up or bottom-up) read past GDAL's block cache
    (``GTIFF_DIRECT_IO``, :func:`read_env` with ``direct``) hold the codes and valid pixels of a cached read; a
    VRT of it (its sources may lie on a network) and a band-interleaved copy keep the cache."""
    from dunemap.io.formats import embedding_creation
    from dunemap.mapping.predict import direct_reads, read_env

    rng = np.random.default_rng(0)
    codes = rng.integers(-127, 128, size=(64, 600, 520), dtype=np.int8)
    codes[:, 100:130, 40:90] = -128
    path = tmp_path / "e.tif"
    transform = UTM_TRANSFORM @ Affine.translation(0, 600) @ Affine.scale(1, -1) if bottom_up else UTM_TRANSFORM
    with rasterio.open(path, "w", **{**embedding_creation("int8"), "compress": compress}, height=600, width=520,
                       count=64, nodata=-128, crs="EPSG:32633", transform=transform) as dst:
        dst.write(codes[:, ::-1] if bottom_up else codes)
    boxes = [Box(0, 0, 600, 520), Box(37, 300, 290, 220), Box(250, 10, 350, 300)]
    reads = {}
    for direct in (False, True):
        with EmbeddingReader(path) as reader, read_env(direct=direct):
            assert direct_reads(reader)
            reads[direct] = [reader.read(box) for box in boxes]
    for box, cached, direct in zip(boxes, reads[False], reads[True]):
        np.testing.assert_array_equal(direct.data, cached.data)
        np.testing.assert_array_equal(direct.valid, cached.valid)
        rows, cols = box.slices()
        np.testing.assert_array_equal(direct.data, codes[:, rows, cols])
    assert not reads[True][0].valid[100:130, 40:90].any() and reads[True][0].valid.sum() == 600 * 520 - 30 * 50
    vrt = tmp_path / "e.vrt"
    rasterio.shutil.copy(path, vrt, driver="VRT")
    rasterio.shutil.copy(path, tmp_path / "band.tif", driver="GTiff", interleave="band", tiled=True)
    for other in (vrt, tmp_path / "band.tif"):  # band-interleaved: no tiles to split, and the cache spares re-decoding
        with EmbeddingReader(other) as reader:
            assert not direct_reads(reader)


def test_classify_is_argmax_and_max_with_ties_to_the_first_class_and_nodata_where_invalid() -> None:
    from dunemap.mapping.predict import classify

    rng = np.random.default_rng(0)
    probs = rng.random((7, 40, 50), dtype=np.float32)
    probs[:, 3, 4] = 0.5  # every class ties: the first wins, as argmax
    probs[2, 5, 6] = probs[4, 5, 6] = 2.0  # two tie at the top
    valid = rng.random((40, 50)) > 0.2
    probs[:, ~valid] = np.nan
    classes, confidence = classify(probs, valid)
    filled = np.where(valid, probs, -1.0)
    assert classes.dtype == np.uint8 and confidence.dtype == np.float32
    assert np.array_equal(classes[valid], filled.argmax(axis=0)[valid]) and (classes[~valid] == 255).all()
    assert np.array_equal(confidence[valid], filled.max(axis=0)[valid]) and np.isnan(confidence[~valid]).all()
    assert classes[3, 4] == 0 and classes[5, 6] == 2 and confidence[5, 6] == 2.0
