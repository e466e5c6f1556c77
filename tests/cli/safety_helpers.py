"""Helpers of the safety tests: run the real CLI in a subprocess, hash files, write small real inputs."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from scipy import ndimage

REPO = Path(__file__).resolve().parents[2]
TRANSFORM = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 7_000_000.0)
CRS = "EPSG:32733"
BANDS = 16


def run_cli(*argv: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """``python -m dunemap ARGV`` in a fresh process (this worktree first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "dunemap", *map(str, argv)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


def hashes(*roots: Path) -> dict[Path, str]:
    """sha256 of every regular file under ``roots`` (symlinks not followed)."""
    out = {}
    for root in roots:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
        for p in files:
            out[p] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def assert_one_line_error(proc: subprocess.CompletedProcess, pattern: str) -> None:
    """Exit 1, no traceback, and exactly one stderr line ``dunemap: error: ...`` matching ``pattern``."""
    import re

    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("dunemap: error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert re.search(pattern, errors[0]), errors[0]


def unit_vectors(height: int, width: int, bands: int = BANDS, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = ndimage.gaussian_filter(rng.standard_normal((bands, height, width)), sigma=(0, 3, 3))
    return (x / np.linalg.norm(x, axis=0, keepdims=True)).astype(np.float32)


def write_tif(path: Path, data: np.ndarray, crs: str | None = CRS, nodata: float | None = None,
              colormap: dict | None = None, tags: dict | None = None) -> Path:
    c, h, w = data.shape
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", height=h, width=w, count=c, dtype=data.dtype.name, crs=crs,
                       transform=TRANSFORM, nodata=nodata) as dst:
        dst.write(data)
        if colormap:
            dst.write_colormap(1, colormap)
        if tags:
            dst.update_tags(**tags)
    return path
