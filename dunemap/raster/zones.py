"""UTM zones: which zone owns a ground point, and the view of one zone's mosaic that a map of a zone set covers.

**The ownership rule.** A map set over several UTM zones (``dunemap map --index``) maps each zone in
its own CRS, and the archive's tiles of neighbouring zones overlap. Each ground pixel belongs to
exactly one zone: the zone whose central meridian is nearest to the pixel's centre (the standard
6-degree UTM zone of its longitude, :func:`utm_epsg`), north (EPSG 326zz) or south (327zz) of the
equator by its latitude. A zone's map is nodata (255) wherever another zone owns the ground and
outside the requested box; its model still sees the embeddings there as context. So every product
that adds up a set's maps counts each pixel once, each in its own projection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from affine import Affine

from dunemap.errors import InputError
from dunemap.raster.geometry import Box


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS84 UTM zone holding (lon, lat): 326zz north of the equator, 327zz south."""
    zone = math.floor((lon + 180.0) / 6.0) % 60 + 1
    return (32600 if lat >= 0 else 32700) + zone


def is_utm(epsg: int | None) -> bool:
    """Whether ``epsg`` is a WGS84 UTM zone (326zz north, 327zz south)."""
    return epsg is not None and (32601 <= epsg <= 32660 or 32701 <= epsg <= 32760)


def utm_zone_name(epsg: int) -> str:
    """``33S`` for EPSG:32733, ``38N`` for EPSG:32638; other codes are refused in one line."""
    if not is_utm(epsg):
        raise InputError(f"EPSG:{epsg} is not a WGS84 UTM zone (326zz/327zz); an AEF zone set needs UTM tiles")
    return f"{epsg % 100}{'N' if epsg < 32700 else 'S'}"


def owner_epsg(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """:func:`utm_epsg` of arrays of longitudes and latitudes (degrees)."""
    zone = np.floor((np.asarray(lon) + 180.0) / 6.0).astype(np.int64) % 60 + 1
    return np.where(np.asarray(lat) >= 0, 32600, 32700) + zone


@dataclass(frozen=True)
class ZoneView:
    """The part of one zone's mosaic a map of a zone set covers, and the ground it owns there.

    ``bounds`` (in the zone's CRS) is the extent to map: the box's part of the zone plus a margin of
    context, snapped outwards to the tiles' pixel grid by the reader. Pixels whose centre lies
    outside ``bbox`` (WGS84 west, south, east, north) or in another zone are nodata in the map.
    """

    epsg: int
    bbox: tuple[float, float, float, float]
    bounds: tuple[float, float, float, float]  # minx, miny, maxx, maxy in the zone's CRS
    margin: int = 0  # pixels of context around ``bounds``, read but not mapped

    def crop(self, transform: Affine, height: int, width: int) -> Box | None:
        """The pixel box of a north-up grid (``transform``, ``height`` x ``width``) covering ``bounds`` and ``margin``
        pixels around them, or None when the grid misses them."""
        minx, miny, maxx, maxy = self.bounds
        m = self.margin
        c0 = math.floor((minx - transform.c) / transform.a + 1e-6) - m
        c1 = math.ceil((maxx - transform.c) / transform.a - 1e-6) + m
        r0 = math.floor((maxy - transform.f) / transform.e + 1e-6) - m
        r1 = math.ceil((miny - transform.f) / transform.e - 1e-6) + m
        return Box(0, 0, height, width).intersection(Box(r0, c0, max(r1 - r0, 0), max(c1 - c0, 0)))

    def owned(self, transform: Affine, box: Box) -> np.ndarray:
        """The (h, w) mask of ``box``'s pixels (of the grid at north-up ``transform``) that this zone owns."""
        from pyproj import Transformer

        to_wgs84 = Transformer.from_crs(f"EPSG:{self.epsg}", "EPSG:4326", always_xy=True)
        border = _border(box)
        if self._inside(*to_wgs84.transform(*_centres(transform, *border))).all():
            return np.ones(box.shape, dtype=bool)  # owned ground is one piece: a box with an owned border is owned
        rows, cols = np.mgrid[box.row:box.row_stop, box.col:box.col_stop]
        lon, lat = to_wgs84.transform(*_centres(transform, rows.ravel(), cols.ravel()))
        return self._inside(lon, lat).reshape(box.shape)

    def _inside(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        w, s, e, n = self.bbox
        lon, lat = np.asarray(lon), np.asarray(lat)
        return (lon >= w) & (lon < e) & (lat >= s) & (lat < n) & (owner_epsg(lon, lat) == self.epsg)


def _centres(transform: Affine, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return transform.c + (cols + 0.5) * transform.a, transform.f + (rows + 0.5) * transform.e


def _border(box: Box) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of every pixel along the edges of ``box``."""
    rs, cs = np.arange(box.row, box.row_stop), np.arange(box.col, box.col_stop)
    rows = np.concatenate([rs, rs, np.full(cs.size, box.row), np.full(cs.size, box.row_stop - 1)])
    cols = np.concatenate([np.full(rs.size, box.col), np.full(rs.size, box.col_stop - 1), cs, cs])
    return rows, cols
