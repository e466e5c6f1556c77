"""The class a class map, or a set of disjoint class maps, shows under points given in any CRS.

Each point is carried from its own CRS into each map's CRS (pyproj) and read in the pixel it falls in.
In a set (:mod:`dunemap.products.mapset`) a point is read from the map whose UTM zone owns its ground
(:mod:`dunemap.raster.zones`). Where that map is nodata under the point (a point within half a pixel of
a zone border, where the zones' pixel grids do not line up) or no map of the set is that zone, it is read
from the one map with data there. A point on no map's data, or on the data of several maps none of which
owns it (maps listed by hand that overlap), is refused in one line naming the points.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyproj

from dunemap.errors import InputError
from dunemap.products.classmap import open_class_map
from dunemap.raster.legend import NODATA_CLASS
from dunemap.raster.zones import owner_epsg

SHOWN_IDS = 10  # point ids quoted in an error


def quote_ids(ids: np.ndarray) -> str:
    """The first :data:`SHOWN_IDS` point ids, and how many more, for an error line."""
    shown = ", ".join(str(int(i)) for i in ids[:SHOWN_IDS])
    return shown + (f" and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else "")


def classes_at(maps: Sequence[Path], x: np.ndarray, y: np.ndarray, crs, points: Path,
               point_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(class under each point, index in ``maps`` of the map it was read from) for points at ``x``, ``y`` in
    ``crs`` (any pyproj input) of the file ``points``. One map: every point must lie on its data. A set: each
    point is read from the map that owns its ground (module docstring)."""
    if not crs:  # never assume the map's CRS: points of another CRS would land elsewhere
        raise InputError(f"{points}: the reference points have no CRS; expected a layer with a coordinate "
                         "reference system (assign the one they were made in, e.g. in QGIS)")
    crs_points = pyproj.CRS.from_user_input(crs)
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    read = [_read(Path(m), x, y, crs_points) for m in maps]
    if len(maps) == 1:
        values, outside, _ = read[0]
        if outside.any():
            raise InputError(f"{points}: {int(outside.sum())} point(s) lie outside the map {maps[0]} "
                             f"(point_id {quote_ids(point_ids[outside])})")
        nodata = values == NODATA_CLASS
        if nodata.any():
            raise InputError(f"{points}: {int(nodata.sum())} point(s) fall on nodata of {maps[0]} "
                             f"(point_id {quote_ids(point_ids[nodata])})")
        return values, np.zeros(values.size, dtype=np.int64)
    values = np.stack([v for v, _, _ in read])  # (maps, points)
    on_data = values != NODATA_CLASS
    lon, lat = pyproj.Transformer.from_crs(crs_points, "EPSG:4326", always_xy=True).transform(x, y)
    owner = owner_epsg(lon, lat)
    owns = on_data & (np.array([epsg for _, _, epsg in read])[:, None] == owner[None, :])
    several = on_data.sum(axis=0) > 1
    names = ", ".join(Path(m).name for m in maps)
    nowhere = ~on_data.any(axis=0)
    if nowhere.any():
        raise InputError(f"{points}: {int(nowhere.sum())} point(s) fall on no map's data (outside every map of the "
                         f"set or on its nodata: {names}) (point_id {quote_ids(point_ids[nowhere])})")
    unowned = several & ~owns.any(axis=0)
    if unowned.any():
        raise InputError(f"{points}: {int(unowned.sum())} point(s) fall on the data of several maps of the set "
                         f"({names}), none of them the UTM zone of the ground there; a set's maps must not overlap "
                         f"(point_id {quote_ids(point_ids[unowned])})")
    index = np.where(owns.any(axis=0), owns.argmax(axis=0), on_data.argmax(axis=0))
    return values[index, np.arange(x.size)], index


def _read(raster: Path, x: np.ndarray, y: np.ndarray, crs_points: pyproj.CRS) -> tuple[np.ndarray, np.ndarray,
                                                                                        int | None]:
    """(class under each point, 255 outside the map; whether each point is outside; the map's EPSG code)."""
    with open_class_map(raster, "its pixel areas are unknown") as src:
        crs_map = pyproj.CRS.from_user_input(src.crs.to_wkt())
        if not crs_points.equals(crs_map):
            x, y = pyproj.Transformer.from_crs(crs_points, crs_map, always_xy=True).transform(x, y)
        cols, rows = ~src.transform @ (np.asarray(x), np.asarray(y))
        rows, cols = np.floor(rows).astype(np.int64), np.floor(cols).astype(np.int64)
        outside = (rows < 0) | (cols < 0) | (rows >= src.height) | (cols >= src.width)
        values = np.full(rows.size, NODATA_CLASS, dtype=np.int64)
        if (~outside).any():
            centres = zip(*(src.transform @ (cols[~outside] + 0.5, rows[~outside] + 0.5)))
            values[~outside] = [v[0] for v in src.sample(centres)]
        return values, outside, src.crs.to_epsg()
