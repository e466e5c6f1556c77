"""Opening a class map for a product: one place for the checks every product needs."""

from __future__ import annotations

import os
from pathlib import Path

import rasterio
from rasterio.errors import RasterioError

from dunemap.errors import InputError, RasterIOError


def open_class_map(map_path: str | os.PathLike, why_crs: str) -> rasterio.io.DatasetReader:
    """Open a uint8 class map with a CRS; ``why_crs`` ends the error raised when it has none."""
    map_path = Path(map_path)
    if not map_path.exists():
        raise InputError(f"{map_path}: class map not found")
    try:
        src = rasterio.open(map_path)
    except RasterioError as exc:
        raise RasterIOError(f"{map_path}: cannot open ({exc})") from None
    if src.count < 1 or src.dtypes[0] != "uint8":
        src.close()
        raise InputError(f"{map_path}: expected a uint8 class map, found {src.dtypes[0]} ({src.count} band(s))")
    if src.crs is None:
        src.close()
        raise InputError(f"{map_path}: the map has no CRS; {why_crs}")
    return src
