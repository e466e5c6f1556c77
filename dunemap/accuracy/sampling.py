"""Stratified random sampling of a class map: the strata are the map classes, the points are pixel centres.

Allocation: at least ``min_per_class`` points in every mapped class and the rest proportional to the
classes' true areas (largest remainder), or an explicit per-class table. A class with fewer pixels
than asked is taken whole. The default minimum is the 2 points the stratified estimator needs for a
variance (``dunemap accuracy`` refuses a class with fewer), so any sample it draws can be assessed;
Olofsson et al. (2014) advise 50 to 100 for rare classes. A sample that leaves a class under 2 points
(an explicit smaller minimum or table) is drawn with a warning naming the classes. The draw is
deterministic for a seed: the ranks of the chosen pixels are drawn per class, in class order, and located
by one row-major scan of the map; nodata is never a stratum.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from dunemap.accuracy.estimator import MIN_STRATUM_POINTS
from dunemap.errors import ConfigError, InputError
from dunemap.io.formats import file_set, vector_driver, write_vectors
from dunemap.io.outputs import check_outputs
from dunemap.products.classmap import open_class_map
from dunemap.products.stats import class_areas

log = logging.getLogger(__name__)

SCAN_PIXELS = 1 << 24  # pixels per strip of rows read while locating the sampled pixels
POINT_FIELDS = ("point_id", "map_class", "map_name", "ref_class")


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
    """Points drawn from a class map: pixel indices, pixel-centre coordinates in the map's CRS, map classes."""

    map_path: Path
    crs: object  # rasterio CRS of the map
    rows: np.ndarray
    cols: np.ndarray
    x: np.ndarray
    y: np.ndarray
    map_class: np.ndarray
    allocation: list[StratumAllocation]

    @property
    def unusable(self) -> list[StratumAllocation]:
        """Strata too thin for ``dunemap accuracy``: under 2 points, unless one pixel with its one point (a census)."""
        return [a for a in self.allocation if a.taken < MIN_STRATUM_POINTS and not (a.pixels == a.taken == 1)]

    @property
    def short(self) -> list[StratumAllocation]:
        """Strata taken whole because they have fewer pixels than asked."""
        return [a for a in self.allocation if a.taken < a.asked]

    def summary(self) -> str:
        lines = [f"{len(self.rows)} points in {sum(a.taken > 0 for a in self.allocation)} strata"]
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
    map_path: str | os.PathLike,
    n: int = 0,
    min_per_class: int = MIN_STRATUM_POINTS,
    seed: int = 0,
    per_class: Mapping[str | int, int] | None = None,
) -> MapSample:
    """Draw a stratified random sample of pixel centres from the class map at ``map_path``.

    ``per_class`` (class id or name -> points) replaces the area-proportional allocation of ``n``.
    """
    map_path = Path(map_path)
    stats = class_areas(map_path)
    mapped = [r for r in stats.rows if r.pixels > 0]
    if not mapped:
        raise InputError(f"{map_path}: the map has no mapped (non-nodata) pixels to sample")
    ids, names = [r.class_id for r in mapped], [r.class_name for r in mapped]
    pixels = np.array([r.pixels for r in mapped], dtype=np.int64)
    if per_class:
        table = _parse_table(per_class, ids, names)
        asked = np.array([table.get(i, 0) for i in ids], dtype=np.int64)
    else:
        asked = allocate(np.array([r.area_km2 for r in mapped]), n, min_per_class)
    taken = np.minimum(asked, pixels)
    rng = np.random.default_rng(seed)
    ranks = {cid: np.sort(rng.choice(int(p), size=int(t), replace=False)) for cid, p, t in zip(ids, pixels, taken)}

    rows, cols, classes = [], [], []
    with open_class_map(map_path, "its pixel areas are unknown") as src:
        transform, crs = src.transform, src.crs
        strip = max(1, SCAN_PIXELS // src.width)
        seen = dict.fromkeys(ids, 0)
        for r0 in range(0, src.height, strip):
            block = src.read(1, window=Window(0, r0, src.width, min(strip, src.height - r0))).ravel()
            for cid in ids:
                want = ranks[cid]
                lo, hi = np.searchsorted(want, [seen[cid], seen[cid] + np.count_nonzero(block == cid)])
                if hi > lo:
                    flat = np.flatnonzero(block == cid)[want[lo:hi] - seen[cid]]
                    rows.append(r0 + flat // src.width)
                    cols.append(flat % src.width)
                    classes.append(np.full(flat.size, cid, dtype=np.int64))
                seen[cid] += np.count_nonzero(block == cid)
    rows_a = np.concatenate(rows) if rows else np.empty(0, np.int64)
    cols_a = np.concatenate(cols) if cols else np.empty(0, np.int64)
    cls_a = np.concatenate(classes) if classes else np.empty(0, np.int64)
    order = np.lexsort((cols_a, rows_a, cls_a))  # by class, then raster order
    rows_a, cols_a, cls_a = rows_a[order], cols_a[order], cls_a[order]
    x, y = transform @ (cols_a + 0.5, rows_a + 0.5)
    allocation = [StratumAllocation(r.class_id, r.class_name, r.pixels, r.area_km2, int(a), int(t))
                  for r, a, t in zip(mapped, asked, taken)]
    sample = MapSample(map_path, crs, rows_a, cols_a, np.asarray(x), np.asarray(y), cls_a, allocation)
    if sample.unusable:
        log.warning("%s: %s get fewer than %d points; `dunemap accuracy` will refuse them (give --min-per-class %d "
                    "or more; 50 to 100 for rare classes, Olofsson et al. 2014)", map_path,
                    ", ".join(f"class {a.class_id} ({a.name}) {a.taken}" for a in sample.unusable),
                    MIN_STRATUM_POINTS, MIN_STRATUM_POINTS)
    return sample


def write_points(sample: MapSample, out: str | os.PathLike, layer: str = "points") -> Path:
    """Write the sample as points (``point_id``, ``map_class``, ``map_name`` and an empty ``ref_class``) in the
    vector format ``out``'s extension names (:mod:`dunemap.io.formats`)."""
    import shapely

    out = Path(out)
    names = {a.class_id: a.name for a in sample.allocation}
    fields = [
        np.arange(1, len(sample.rows) + 1, dtype=np.int32),
        sample.map_class.astype(np.int32),
        np.array([names[int(c)] for c in sample.map_class], dtype=object),
        np.array([None] * len(sample.rows), dtype=object),  # for the expert to fill in, e.g. in QGIS
    ]
    geometry = shapely.to_wkb(shapely.points(sample.x, sample.y))
    return write_vectors(out, geometry, fields, list(POINT_FIELDS), layer=layer, geometry_type="Point",
                         crs=sample.crs.to_wkt())


def sample_map(
    map_path: str | os.PathLike,
    out: str | os.PathLike,
    n: int = 0,
    min_per_class: int = MIN_STRATUM_POINTS,  # the fewest points per class that ``dunemap accuracy`` can use
    seed: int = 0,
    per_class: Mapping[str | int, int] | None = None,
    overwrite: bool = False,
) -> MapSample:
    """``dunemap sample``: :func:`draw_sample` and :func:`write_points` to ``out`` (any vector format of
    :mod:`dunemap.io.formats`; a Shapefile is checked and published with its sidecars)."""
    check_outputs(file_set(out), [map_path], overwrite=overwrite)
    vector_driver(out)
    sample = draw_sample(map_path, n, min_per_class, seed, per_class)
    write_points(sample, out)
    return sample


__all__ = ["MapSample", "StratumAllocation", "allocate", "draw_sample", "sample_map", "write_points"]
