"""Stratified random sampling of a class map, or of a set of zone maps: the strata are the map classes, the points
are pixel centres.

Allocation: at least ``min_per_class`` points in every mapped class and the rest proportional to the
classes' true areas (largest remainder), or an explicit per-class table. The total can be planned for a
target standard error of overall accuracy (Olofsson et al. 2014, eq. 13). A class with fewer pixels
than asked is taken whole. The default minimum is the 2 points the stratified estimator needs for a
variance (``dunemap accuracy`` refuses a class with fewer), so any sample it draws can be assessed;
Olofsson et al. (2014) advise 50 to 100 for rare classes. A sample that leaves a class under 2 points
(an explicit smaller minimum or table) is drawn with a warning naming the classes. The draw is
deterministic for a seed: the ranks of the chosen pixels are drawn per class, in class order, and located
by one row-major scan of the map; nodata is never a stratum.

A set (a zone set's folder or catalog, or maps: :mod:`dunemap.products.mapset`) is sampled in one draw:
the strata are the classes of all its maps, their areas summed over the maps, each measured in its own
projection, and each class's ranks run over its pixels in the maps one after another (in the set's order).
The points of a set are written in one CRS, :data:`dunemap.products.mapset.SET_CRS` (longitude, latitude),
each with the ``zone`` of the map it was drawn from, which says nothing of its class.

The points are written blind (Olofsson et al. 2014, response design): in random order, numbered
1..n in that order, without the map class, so whoever labels them cannot see what the map says;
``dunemap accuracy`` reads the map class again from the map at each point.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyproj
from rasterio.crs import CRS
from rasterio.windows import Window

from dunemap.accuracy.estimator import MIN_STRATUM_POINTS
from dunemap.errors import ConfigError, InputError
from dunemap.io.formats import file_set, vector_driver, write_vectors
from dunemap.io.outputs import check_outputs
from dunemap.knowledge.catalog import class_texts
from dunemap.products.classmap import open_class_map
from dunemap.products.mapset import SET_CRS, is_set, resolve_maps, zone_label
from dunemap.products.stats import map_areas
from dunemap.raster.legend import value_map_qml

log = logging.getLogger(__name__)

SCAN_PIXELS = 1 << 24  # pixels per strip of rows read while locating the sampled pixels
POINT_FIELDS = ("point_id", "ref_class")  # blind: no map class (accuracy reads it from the map)
ZONE_FIELD = "zone"  # a set's points also name the zone of the map each was drawn from
EXPECTED_USERS = 0.8  # conjectured user's accuracy of every class when planning a sample size (Olofsson 2014: 0.7-0.9)


@dataclass(frozen=True)
class StratumAllocation:
    class_id: int
    name: str
    pixels: int
    area_km2: float
    asked: int  # points the allocation wanted
    taken: int  # points drawn: asked, or every pixel of a smaller class


@dataclass
class MapSample:
    """Points drawn from a class map (or a set): pixel indices, pixel-centre coordinates in the map's CRS (a set's:
    :data:`SET_CRS`), map classes."""

    map_path: Path  # the map, or the set's catalog (its first map when listed by hand)
    crs: object  # rasterio CRS of the map, or of the set's points
    rows: np.ndarray
    cols: np.ndarray
    x: np.ndarray
    y: np.ndarray
    map_class: np.ndarray
    allocation: list[StratumAllocation]
    plan: str = ""  # how the total was chosen, when planned for a target standard error
    class_names: list[str] = field(default_factory=list)  # every class of the legend, by id
    maps: list[Path] = field(default_factory=list)  # the maps of a set (empty for one map)
    source: np.ndarray | None = None  # a set's points: index in ``maps`` of the map each was drawn from
    zones: list[str] = field(default_factory=list)  # a set's maps: the zone each covers (mapset.zone_label)

    @property
    def unusable(self) -> list[StratumAllocation]:
        """Strata too thin for ``dunemap accuracy``: under 2 points, unless one pixel with its one point (a census)."""
        return [a for a in self.allocation if a.taken < MIN_STRATUM_POINTS and not (a.pixels == a.taken == 1)]

    @property
    def short(self) -> list[StratumAllocation]:
        """Strata taken whole because they have fewer pixels than asked."""
        return [a for a in self.allocation if a.taken < a.asked]

    def summary(self) -> str:
        lines = [f"{len(self.rows)} points in {sum(a.taken > 0 for a in self.allocation)} strata"
                 + (f" ({self.plan})" if self.plan else "")]
        for a in self.allocation:
            note = f"  (only {a.pixels} pixels: taken whole)" if a.taken < a.asked else ""
            lines.append(f"  {a.class_id:>3} {a.name:<28} {a.area_km2:>12.4f} km2 {a.taken:>6} points{note}")
        return "\n".join(lines)


def allocate(areas: np.ndarray, n: int, min_per_class: int) -> np.ndarray:
    """Points per stratum: ``min_per_class`` each, the remaining ``n - K * min_per_class`` proportional to ``areas``.

    Pure; ``areas`` holds the strata's areas (all positive). The remainder is split by largest remainder, so
    the allocation sums to ``n`` exactly.
    """
    areas = np.asarray(areas, dtype=np.float64)
    k = areas.size
    if n < 1 or min_per_class < 0:
        raise ConfigError(f"--n {n} must be positive and --min-per-class {min_per_class} not negative")
    rest = n - k * min_per_class
    if rest < 0:
        raise ConfigError(f"--n {n} cannot give {min_per_class} points to each of {k} mapped classes; "
                          f"use --n {k * min_per_class} or more, or a smaller --min-per-class")
    share = rest * areas / areas.sum()
    base = np.floor(share).astype(np.int64)
    order = np.argsort(-(share - base), kind="stable")
    base[order[: rest - int(base.sum())]] += 1
    return base + min_per_class


def planned_size(areas: np.ndarray, target_se: float, expected_users: float = EXPECTED_USERS,
                 pixels: int | None = None) -> int:
    """Points for a target standard error of overall accuracy: Olofsson et al. 2014, eq. 13 (Cochran 1977, 5.25).

    ``n = (sum_i W_i S_i)^2 / (S(O)^2 + sum_i W_i S_i^2 / N)`` with ``W_i`` the strata's area shares,
    ``S_i = sqrt(U_i (1 - U_i))`` from the conjectured user's accuracy ``U_i`` and ``N`` the population
    (mapped pixels; None: infinite). Pure; rounded up.
    """
    areas = np.asarray(areas, dtype=np.float64)
    if not 0 < target_se < 0.5:
        raise ConfigError(f"--target-se {target_se} must be between 0 and 0.5 (a standard error of a proportion)")
    users = np.broadcast_to(np.asarray(expected_users, dtype=np.float64), areas.shape)
    if ((users <= 0) | (users >= 1)).any():
        raise ConfigError(f"--expected-users {expected_users} must be strictly between 0 and 1")
    w = areas / areas.sum()
    s = np.sqrt(users * (1 - users))
    finite = 0.0 if not pixels else float((w * s**2).sum()) / pixels
    return int(np.ceil(float((w * s).sum()) ** 2 / (target_se**2 + finite) - 1e-9))


def _parse_table(table: Mapping[str | int, int], ids: list[int], names: list[str]) -> dict[int, int]:
    wanted: dict[int, int] = {}
    for key, count in table.items():
        key_s = str(key).strip()
        if key_s.isdigit() and int(key_s) in ids:
            cid = int(key_s)
        elif key_s in names:
            cid = ids[names.index(key_s)]
        else:
            raise ConfigError(f"per-class table: {key_s!r} is not a mapped class; valid: "
                              + ", ".join(f"{i} ({n})" for i, n in zip(ids, names)))
        if int(count) < 0:
            raise ConfigError(f"per-class table: {key_s}={count} must not be negative")
        wanted[cid] = int(count)
    return wanted


def draw_sample(
    map_path: str | os.PathLike | Sequence[str | os.PathLike],
    n: int = 0,
    min_per_class: int = MIN_STRATUM_POINTS,
    seed: int = 0,
    per_class: Mapping[str | int, int] | None = None,
    target_se: float = 0.0,
    expected_users: float = EXPECTED_USERS,
) -> MapSample:
    """Draw a stratified random sample of pixel centres from the class map at ``map_path``, or from a set of
    class maps in one draw (module docstring), in random order.

    ``per_class`` (class id or name -> points) replaces the area-proportional allocation of ``n``;
    ``target_se`` (> 0) sets ``n`` by :func:`planned_size` instead.
    """
    maps, catalog = resolve_maps(map_path)
    stats = map_areas(map_path)
    map_path = stats.map_path
    mapped = [r for r in stats.rows if r.pixels > 0]
    if not mapped:
        raise InputError(f"{map_path}: the map has no mapped (non-nodata) pixels to sample")
    ids, names = [r.class_id for r in mapped], [r.class_name for r in mapped]
    plan = ""
    pixels = np.array([r.pixels for r in mapped], dtype=np.int64)
    if per_class:
        table = _parse_table(per_class, ids, names)
        asked = np.array([table.get(i, 0) for i in ids], dtype=np.int64)
    else:
        areas = np.array([r.area_km2 for r in mapped])
        if target_se:
            planned = planned_size(areas, target_se, expected_users, int(pixels.sum()))
            n = max(planned, min_per_class * len(mapped))
            plan = (f"{planned} planned for a standard error of overall accuracy of {target_se:g} with user's "
                    f"accuracies of {expected_users:g} (Olofsson et al. 2014, eq. 13)"
                    + (f"; {n} to give each class {min_per_class}" if n > planned else ""))
        asked = allocate(areas, n, min_per_class)
    taken = np.minimum(asked, pixels)
    rng = np.random.default_rng(seed)
    ranks = {cid: np.sort(rng.choice(int(p), size=int(t), replace=False)) for cid, p, t in zip(ids, pixels, taken)}

    as_set = is_set(maps, catalog)
    seen = dict.fromkeys(ids, 0)  # pixels of each class passed so far, over the maps one after another
    found = [_locate(m, ranks, seen) for m in maps]
    rows_a, cols_a, cls_a = (np.concatenate([f[k] for f in found]) for k in range(3))
    source = np.concatenate([np.full(f[0].size, i, dtype=np.int64) for i, f in enumerate(found)])
    order = rng.permutation(np.lexsort((cols_a, rows_a, source, cls_a)))  # blind: no order by class or position
    rows_a, cols_a, cls_a, source = rows_a[order], cols_a[order], cls_a[order], source[order]
    x, y = np.empty(rows_a.size), np.empty(rows_a.size)
    for i, (*_, transform, crs) in enumerate(found):  # pixel centres, in one CRS for a set
        at = source == i
        x[at], y[at] = transform @ (cols_a[at] + 0.5, rows_a[at] + 0.5)
        if as_set:
            x[at], y[at] = pyproj.Transformer.from_crs(crs.to_wkt(), SET_CRS, always_xy=True).transform(x[at], y[at])
    allocation = [StratumAllocation(r.class_id, r.class_name, r.pixels, r.area_km2, int(a), int(t))
                  for r, a, t in zip(mapped, asked, taken)]
    legend_names = [r.class_name for r in stats.rows]
    if as_set:
        zones = [zone_label(m, f[-1].to_epsg()) for m, f in zip(maps, found)]
        sample = MapSample(map_path, CRS.from_user_input(SET_CRS), rows_a, cols_a, x, y, cls_a, allocation, plan,
                           legend_names, list(maps), source, zones)
    else:
        sample = MapSample(map_path, found[0][-1], rows_a, cols_a, x, y, cls_a, allocation, plan, legend_names)
    if sample.unusable:
        log.warning("%s: %s get fewer than %d points; `dunemap accuracy` will refuse them (give --min-per-class %d "
                    "or more; 50 to 100 for rare classes, Olofsson et al. 2014)", map_path,
                    ", ".join(f"class {a.class_id} ({a.name}) {a.taken}" for a in sample.unusable),
                    MIN_STRATUM_POINTS, MIN_STRATUM_POINTS)
    return sample


def _locate(map_path: Path, ranks: dict[int, np.ndarray], seen: dict[int, int]) -> tuple:
    """(rows, cols, classes, transform, CRS): the pixels of ``map_path`` whose rank in their class is in ``ranks``
    (sorted), ranks counted from ``seen`` (the class's pixels in the maps before this one), found by one row-major
    scan, and the map's grid; ``seen`` is advanced past this map."""
    rows, cols, classes = [], [], []
    with open_class_map(map_path, "its pixel areas are unknown") as src:
        strip = max(1, SCAN_PIXELS // src.width)
        for r0 in range(0, src.height, strip):
            block = src.read(1, window=Window(0, r0, src.width, min(strip, src.height - r0))).ravel()
            for cid, want in ranks.items():
                lo, hi = np.searchsorted(want, [seen[cid], seen[cid] + np.count_nonzero(block == cid)])
                if hi > lo:
                    flat = np.flatnonzero(block == cid)[want[lo:hi] - seen[cid]]
                    rows.append(r0 + flat // src.width)
                    cols.append(flat % src.width)
                    classes.append(np.full(flat.size, cid, dtype=np.int64))
                seen[cid] += np.count_nonzero(block == cid)
        transform, crs = src.transform, src.crs
    empty = np.empty(0, np.int64)
    return (*(np.concatenate(a) if a else empty for a in (rows, cols, classes)), transform, crs)


def write_points(sample: MapSample, out: str | os.PathLike, layer: str = "points") -> Path:
    """Write the sample blind: points in the sample's (random) order with ``point_id`` 1..n and an empty
    ``ref_class``, in the vector format ``out``'s extension names (:mod:`dunemap.io.formats`). A GeoPackage
    also gets a default QGIS style that edits ``ref_class`` with a drop-down of the classes' labels."""
    import shapely

    out = Path(out)
    fields = [
        np.arange(1, len(sample.rows) + 1, dtype=np.int32),
        np.array([None] * len(sample.rows), dtype=object),  # for the expert to fill in, e.g. in QGIS
    ]
    names = list(POINT_FIELDS)
    if sample.source is not None:  # a set's points: the zone of the map each came from
        fields.append(np.array(sample.zones, dtype=object)[sample.source])
        names.append(ZONE_FIELD)
    labels = [label for label, _ in class_texts(sample.class_names)]
    geometry = shapely.to_wkb(shapely.points(sample.x, sample.y))
    return write_vectors(out, geometry, fields, names, layer=layer, geometry_type="Point",
                         crs=sample.crs.to_wkt(), style_qml=value_map_qml("ref_class", labels))


def sample_map(
    map_path: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    n: int = 0,
    min_per_class: int = MIN_STRATUM_POINTS,  # the fewest points per class that ``dunemap accuracy`` can use
    seed: int = 0,
    per_class: Mapping[str | int, int] | None = None,
    target_se: float = 0.0,
    expected_users: float = EXPECTED_USERS,
    overwrite: bool = False,
) -> MapSample:
    """``dunemap sample``: :func:`draw_sample` and :func:`write_points` to ``out`` (any vector format of
    :mod:`dunemap.io.formats`; a Shapefile is checked and published with its sidecars). ``map_path`` is a
    class map or a set (maps, a zone set's folder or catalog), sampled in one draw."""
    maps, catalog = resolve_maps(map_path)
    check_outputs(file_set(out), [*maps, catalog], overwrite=overwrite)
    vector_driver(out)
    sample = draw_sample(map_path, n, min_per_class, seed, per_class, target_se, expected_users)
    write_points(sample, out)
    return sample


__all__ = ["MapSample", "StratumAllocation", "allocate", "draw_sample", "planned_size", "sample_map", "write_points"]
