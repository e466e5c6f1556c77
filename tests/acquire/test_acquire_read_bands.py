"""A zone wider than the read cache holds, read over HTTP: in vertical bands of map blocks (``read_layout``) its
tile is fetched with fewer bytes than row by row across the grid, and the map is the same to the byte."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from aef_archive_helpers import serve
from affine import Affine

from dunemap.io.aef import quantize
from dunemap.mapping.config import MapConfig
from dunemap.mapping.engine import make_assembler, map_fingerprint, plan_map, predictor_legend
from dunemap.mapping.predict import predict_block, read_env, read_layout
from dunemap.mapping.windows import plan_blocks
from dunemap.raster.reader import EmbeddingReader
from dunemap.raster.tags import model_tags
from dunemap.runtime import load_predictor

HEIGHT, WIDTH, STORED = 192, 768, 64  # a wide zone stored in 64 px blocks (64 bands: 256 KiB each)
CACHE_CAP = 4 * 1024 * 1024  # 16 stored blocks: less than a row of map blocks across the grid touches
CONFIG = MapConfig(window=64, stride=32, block_size=64, progress=False, prefetch=False)


def write_wide(path: Path, height: int = HEIGHT, width: int = WIDTH) -> Path:
    """A 64-band int8 GeoTIFF of random unit vectors in AEF codes, tiled in uncompressed 64 px blocks."""
    rng = np.random.default_rng(3)
    vec = rng.normal(size=(64, height, width)).astype(np.float32)
    vec /= np.linalg.norm(vec, axis=0, keepdims=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=64, dtype="int8", nodata=-128,
                       crs="EPSG:32733", transform=Affine(10, 0, 500000, 0, -10, 7000000), tiled=True,
                       blockxsize=STORED, blockysize=STORED) as ds:
        ds.write(quantize(vec))
    return path


def _fetched(url: str, served: dict, band: int, cache: int) -> int:
    """Bytes the server sends while every map block's extent is read in the order of ``band``."""
    before = served.get("wide.tiff", 0)
    with EmbeddingReader(url) as reader:
        for block in plan_blocks(reader.height, reader.width, CONFIG.window, CONFIG.stride,
                                 CONFIG.block_size).pending(set(), band):
            with read_env(cache):
                reader.read(block.extent)
    return served["wide.tiff"] - before


def test_a_wide_zone_over_http_is_fetched_in_bands_with_fewer_bytes(tmp_path: Path, monkeypatch) -> None:
    wide = write_wide(tmp_path / "www" / "wide.tiff")
    with serve(wide.parent) as (base, served):
        url = f"/vsicurl/{base}/wide.tiff"
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        monkeypatch.setenv("VSI_CACHE", "FALSE")  # only GDAL's block cache keeps stored blocks between reads
        monkeypatch.setenv("CPL_VSIL_CURL_NON_CACHED", f"/vsicurl/{base}")
        with EmbeddingReader(url) as reader:
            plan = plan_blocks(reader.height, reader.width, CONFIG.window, CONFIG.stride, CONFIG.block_size)
            cache, band = read_layout(reader, plan, most=CACHE_CAP)
            assert read_layout(reader, plan) == (256 * 1024 * 1024, 0)  # the default cap holds a row across
        assert 0 < band < len(plan.spans(1)) and cache == CACHE_CAP
        rows = _fetched(url, served, 0, CACHE_CAP)
        bands = _fetched(url, served, band, cache)
    stored = 64 * HEIGHT * WIDTH  # the image's bytes: every stored block is fetched at least once
    assert stored <= bands < rows, (stored, bands, rows)


def test_bands_map_to_the_same_bytes_as_rows(tmp_path: Path, local_checkpoint: Path) -> None:
    wide = write_wide(tmp_path / "wide.tiff", 128, 320)  # 2 x 5 map blocks
    predictor = load_predictor(local_checkpoint, precision="fp32")
    outputs = []
    for band in (0, 3):
        out = tmp_path / f"band{band}.tif"
        with EmbeddingReader(wide) as reader:
            plan = plan_map(reader, CONFIG.for_model(None))
            assembler = make_assembler(out, plan, predictor_legend(predictor), CONFIG,
                                       map_fingerprint([wide], plan, predictor, CONFIG), predictor.precision,
                                       model=model_tags(predictor))
            assembler.open(resume=False)
            order = [block.index for block in assembler.pending(band)]
            for index in order:
                assembler.add(predict_block(reader, predictor, plan.blocks[index], CONFIG))
            assembler.finalize()
        outputs.append((order, out.read_bytes()))
    (rows, row_bytes), (bands, band_bytes) = outputs
    assert rows == sorted(rows) and bands != rows and sorted(bands) == rows
    assert band_bytes == row_bytes
