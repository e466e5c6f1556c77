"""Cloud-Optimized GeoTIFFs: the one deterministic COG conversion and its validation (maps and mosaics alike)."""

from __future__ import annotations

import logging
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
        raise RasterIOError(f"{name or path}: cannot read the Cloud-Optimized GeoTIFF back ({gdal_cause(exc)})") from None
    if not ok:
        raise RasterIOError(f"{name or path}: not a valid Cloud-Optimized GeoTIFF: {'; '.join(errors)}")
