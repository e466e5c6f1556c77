"""Helpers of the GIS-output tests: AEF rasters (north-up or bottom-up), a tiny checkpoint, the CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio
import torch
from affine import Affine
from scipy import ndimage

from dunemap.io.aef import quantize
from dunemap.knowledge.catalog import load_catalog
from dunemap.models import create_model
from dunemap.models.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parents[2]
UTM = "EPSG:32633"
ORIGIN = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 7400000.0)  # north-up, 10 m


def aef_codes(height: int, width: int, seed: int = 0) -> np.ndarray:
    """(64, H, W) int8 AEF codes of smooth unit vectors (north-up rows)."""
    x = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal((64, height, width)), sigma=(0, 4, 4))
    return quantize((x / np.linalg.norm(x, axis=0, keepdims=True)).astype(np.float32))


def write_aef(path: Path, codes: np.ndarray, transform: Affine = ORIGIN, bottom_up: bool = False) -> Path:
    """Write north-up ``codes`` as an int8 GeoTIFF; ``bottom_up`` stores rows south to north (positive y pixel size)."""
    c, h, w = codes.shape
    if bottom_up:
        codes = codes[:, ::-1, :]
        transform = transform @ Affine.translation(0, h) @ Affine.scale(1, -1)
    with rasterio.open(path, "w", driver="GTiff", height=h, width=w, count=c, dtype="int8", crs=UTM,
                       transform=transform, nodata=-128) as dst:
        dst.write(np.ascontiguousarray(codes))
    return path


def tiny_checkpoint(path: Path) -> Path:
    """A randomly initialised 10-class mit_tiny saved as a dunemap checkpoint (catalog names and colours)."""
    torch.manual_seed(0)
    model = create_model("mit_tiny", num_classes=10, text_dim=32).eval()
    model.set_text(torch.nn.functional.normalize(torch.randn(10, 32), dim=1))
    catalog = load_catalog()
    return save_checkpoint(path, model, list(catalog.names), [tuple(c) for c in catalog.colors])


def cli(*args: str | os.PathLike, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m dunemap ARGS`` in a subprocess with this tree first on the path."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "dunemap", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)
