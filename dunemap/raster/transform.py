"""Geotransforms of north-up grids: rasters stored bottom-up seen north-up, and the transform of a piece.

Every reader sees a raster through its north-up grid (negative y pixel size), whatever order its
rows are stored in; AEF's public COGs store them bottom-up (positive y pixel size).
"""

from __future__ import annotations

from affine import Affine

from dunemap.errors import InputError


def north_up_transform(transform: Affine, height: int, where: str = "raster") -> Affine:
    """The north-up (negative y pixel size) geotransform of a raster stored north-up or bottom-up.

    Rotated or sheared geotransforms and east-to-west columns are rejected, naming ``where``.
    """
    a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f
    if b != 0 or d != 0:
        raise InputError(f"{where}: rotated/sheared geotransform {tuple(transform)[:6]} is not supported; "
                         "expected a north-up or bottom-up grid")
    if a <= 0 or e == 0:
        raise InputError(f"{where}: geotransform pixel size ({a}, {e}) is not supported; "
                         "expected a positive x size and a non-zero y size")
    if e > 0:
        return Affine(a, 0.0, c, 0.0, -e, f + e * height)
    return Affine(a, 0.0, c, 0.0, e, f)


def source_rows(row_off: int, height: int, raster_height: int, bottom_up: bool) -> int:
    """First stored row of the north-up rows ``[row_off, row_off + height)`` in a raster that may be bottom-up."""
    return raster_height - row_off - height if bottom_up else row_off


def tile_transform(nu_transform: Affine, row_off: int, col_off: int) -> Affine:
    """Geotransform of the north-up piece whose top-left pixel is (row_off, col_off).

    Same arithmetic as ``rasterio.windows.transform`` (whose ``*`` on Affine warns under affine 3), so the two
    agree exactly.
    """
    t = nu_transform
    x = t.a * col_off + t.b * row_off + t.c
    y = t.d * col_off + t.e * row_off + t.f
    return Affine(t.a, t.b, t.c + (x - t.c), t.d, t.e, t.f + (y - t.f))
