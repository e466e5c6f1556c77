"""Cloud-Optimized GeoTIFFs: the one deterministic COG conversion and its validation (maps and mosaics alike)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import rasterio
import rasterio.shutil
from rasterio.errors import RasterioError

from dunemap.errors import ConfigError, RasterIOError
from dunemap.io.atomic import atomic_path

log = logging.getLogger(__name__)

GDAL_CACHE_BYTES = 256 * 1024 * 1024  # GDAL block cache while writing: part of the mapping memory budget


def write_cog(src: Path, dst: Path, overview_resampling: str = "MODE", tile: int = 512,
              name: Path | None = None) -> Path:
    """Copy ``src`` to a Cloud-Optimized GeoTIFF at ``dst`` (atomically) and validate it.

    Compression, overview resampling and a single thread are fixed so the bytes depend only on the
    pixels: a resumed map is byte-identical to an uninterrupted one. ``name`` is the path errors
    mention (the final path when ``dst`` is a file in the work folder).
    """
    name = name or dst
    if tile < 128 or tile % 16:
        raise ConfigError(f"COG tile size {tile} must be a multiple of 16, at least 128")
    with atomic_path(dst) as tmp:
        try:
            with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES, GDAL_NUM_THREADS="1"):
                rasterio.shutil.copy(
                    src, tmp, driver="COG", COMPRESS="DEFLATE", LEVEL="6", PREDICTOR="YES",
                    BLOCKSIZE=str(tile), OVERVIEWS="AUTO", OVERVIEW_RESAMPLING=overview_resampling,
                    NUM_THREADS="1", BIGTIFF="IF_SAFER", STATISTICS="NO",
                )
        except RasterioError as exc:
            raise RasterIOError(f"{name}: cannot write the Cloud-Optimized GeoTIFF ({exc})") from None
        validate_cog(tmp, name=name)
    log.debug("wrote %s", dst)
    return dst


def gdal_cause(exc: BaseException) -> str:
    """A GDAL error's own words with those of the error it was raised from ("Write failed. See previous exception")."""
    words = [" ".join(str(exc).split())]
    link = exc.__cause__ or exc.__context__
    if link is not None and str(link).strip():
        words.append(" ".join(str(link).split()))
    return ": ".join(words)


def validate_cog(path: Path, name: Path | None = None) -> None:
    """Raise RasterIOError unless ``path`` is a valid Cloud-Optimized GeoTIFF."""
    from rio_cogeo.cogeo import cog_validate

    try:
        ok, errors, _warnings = cog_validate(str(path), quiet=True)
    except RasterioError as exc:
        raise RasterIOError(f"{name or path}: cannot read the Cloud-Optimized GeoTIFF back "
                            f"({gdal_cause(exc)})") from None
    errors = [e for e in errors if not _square_tiled_overview(path, e)]
    if not ok and errors:
        raise RasterIOError(f"{name or path}: not a valid Cloud-Optimized GeoTIFF: {'; '.join(errors)}")


def _square_tiled_overview(path: Path, error: str) -> bool:
    """True for rio-cogeo's "Overview of index N is not tiled" about an overview that is tiled in square blocks.

    rio-cogeo takes an overview whose block is as wide as the overview for a strip, so an overview exactly one tile
    wide (e.g. a 2048 x 1024 map's 1024 x 512 overview in 512 px tiles) is reported although it is tiled.
    """
    match = re.fullmatch(r"Overview of index (\d+) is not tiled", error)
    if match is None:
        return False
    with rasterio.open(path, OVERVIEW_LEVEL=int(match.group(1))) as ovr:
        block_h, block_w = ovr.block_shapes[0]
        return block_h == block_w and block_h < ovr.height
