"""Seeded fuzz of ``dunemap map`` over raster inputs: a valid map whose nodata is exactly the invalid input, or one line.

Random shapes, dtypes, band counts, NaN/inf/declared-nodata/all-zero patterns, internal masks, with or
without a CRS. The expected nodata is computed here from the documented rule (``raster/reader.py``),
independently of the reader's code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from mapping_helpers import smooth_unit_vectors

from dunemap.cli import main
from dunemap.io.aef import quantize

DTYPES = ("float32", "float64", "int8", "uint8", "int16")  # float16: this rasterio cannot write it


def _fuzz_raster(rng: np.random.Generator, path: Path) -> tuple[list[str], np.ndarray | None]:
    """Write a random raster; return extra CLI options and the expected nodata mask (None = must be refused)."""
    h, w = (int(v) for v in rng.integers(8, 72, size=2))
    bands = int(rng.choice([64, 64, 64, 63, 3]))
    dtype = str(rng.choice(DTYPES))
    x = smooth_unit_vectors(h, w, seed=int(rng.integers(1 << 30)))[:bands] if bands <= 64 else None
    if dtype == "int8":
        data = quantize(x)
    elif dtype in ("uint8", "int16"):
        data = np.clip(x * 100 + 100, 0, 255).astype(dtype)
    else:
        data = x.astype(dtype)
    nodata = None
    rect = lambda: (slice(int(rng.integers(0, h)), int(rng.integers(0, h)) + 1),  # noqa: E731
                    slice(int(rng.integers(0, w)), int(rng.integers(0, w)) + 1))
    for _ in range(int(rng.integers(0, 4))):
        kind = rng.choice(["nan", "inf", "-inf", "nodata", "zero", "band"])
        rows, cols = rect()
        band = int(rng.integers(bands))
        if kind in ("nan", "inf", "-inf") and data.dtype.kind == "f":
            data[band if rng.random() < 0.5 else slice(None), rows, cols] = float(kind)
        elif kind == "nodata":
            nodata = -128 if dtype == "int8" else (-9999.0 if data.dtype.kind == "f" else 0)
            data[band, rows, cols] = nodata
        elif kind == "zero":
            data[:, rows, cols] = 0
        elif kind == "band" and dtype == "float64":
            data[band, rows, cols] = 1e300  # finite in float64, inf in float32
    crs = "EPSG:32733" if rng.random() < 0.8 else None
    mask = rng.random() < 0.2 and bands == 64
    profile = dict(driver="GTiff", height=h, width=w, count=bands, dtype=dtype, crs=crs, nodata=nodata,
                   transform=rasterio.Affine(10, 0, 500_000, 0, -10, 7_000_000))
    internal = None
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if mask:
            internal = np.ones((h, w), bool)
            internal[rect()] = False
            dst.write_mask(internal.astype(np.uint8) * 255)
    options = ["--allow-no-crs"] if crs is None and rng.random() < 0.5 else []
    refused = bands != 64 or dtype in ("uint8", "int16") or (crs is None and not options)
    if refused:
        return options, None
    with np.errstate(over="ignore", invalid="ignore"):
        as32 = data.astype(np.float32)
    invalid = ~np.isfinite(as32).all(axis=0) if dtype != "int8" else (data == -128).any(axis=0)
    if nodata is not None:
        invalid |= (data == nodata).any(axis=0)
    invalid |= ~data.any(axis=0)
    if internal is not None:
        invalid |= ~internal
    return options, invalid


@pytest.mark.parametrize("seed", range(14))
def test_fuzzed_rasters_map_or_fail_in_one_line(seed: int, tmp_path: Path, tiny_checkpoint: Path, capsys) -> None:
    rng = np.random.default_rng(seed)
    path = tmp_path / "fuzz.tif"
    options, invalid = _fuzz_raster(rng, path)
    out = tmp_path / "map.tif"
    code = main(["map", str(path), "--weights", str(tiny_checkpoint), "--out", str(out), "--window", "32",
                 "--stride", "32", "--precision", "fp32", "--device", "cpu", "--no-progress", *options])
    err = capsys.readouterr().err
    if invalid is None:
        assert code == 1 and not out.exists()
        lines = [line for line in err.splitlines() if line.startswith("dunemap: error:")]
        assert len(lines) == 1 and str(path) in lines[0], err
        return
    assert code == 0, err
    with rasterio.open(out) as src:
        classes = src.read(1)
    assert np.array_equal(classes == 255, invalid)
