"""Helpers shared by the mapping tests: seeded smooth embeddings, GeoTIFF writing and an interrupted run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from scipy import ndimage

from dunemap.mapping.engine import make_assembler, map_fingerprint, plan_map, predictor_legend
from dunemap.mapping.predict import predict_block
from dunemap.raster.reader import EmbeddingReader
from dunemap.raster.tags import model_tags

UTM_TRANSFORM = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 7_000_000.0)
UTM_CRS = "EPSG:32733"


def smooth_unit_vectors(height: int, width: int, seed: int = 0, sigma: float = 4.0) -> np.ndarray:
    """(64, H, W) float32 unit-length vectors varying smoothly in space, like AEF pixels."""
    rng = np.random.default_rng(seed)
    x = ndimage.gaussian_filter(rng.standard_normal((64, height, width)), sigma=(0, sigma, sigma))
    return (x / np.linalg.norm(x, axis=0, keepdims=True)).astype(np.float32)


def write_raster(
    path: Path,
    data: np.ndarray,
    transform: Affine = UTM_TRANSFORM,
    crs: str = UTM_CRS,
    nodata: float | None = None,
    bottom_up: bool = False,
) -> Path:
    """Write (C, H, W) ``data`` (north-up rows) as a GeoTIFF; ``bottom_up`` stores rows south to north."""
    c, h, w = data.shape
    if bottom_up:
        data = data[:, ::-1, :]
        transform = transform @ Affine.translation(0, h) @ Affine.scale(1, -1)
    with rasterio.open(path, "w", driver="GTiff", height=h, width=w, count=c, dtype=data.dtype.name,
                       crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(data)
    return path


def interrupted_run(path: Path, out: Path, predictor, config, blocks: int = 2) -> None:
    """Leave ``out`` as a run of ``predictor`` over ``path`` that predicted its first ``blocks`` pending blocks
    (journal and blocks in ``OUT.partial``), then died."""
    with EmbeddingReader(path) as reader:
        plan = plan_map(reader, config)
        assembler = make_assembler(out, plan, predictor_legend(predictor), config,
                                   map_fingerprint([path], plan, predictor, config), predictor.precision,
                                   model=model_tags(predictor))
        assembler.open(resume=False)
        for block in assembler.pending()[:blocks]:
            assembler.add(predict_block(reader, predictor, block, config))
