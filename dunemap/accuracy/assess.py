"""Accuracy assessment of a class map, or of a set of zone maps, from reference points (or a truth raster).

The strata are the map's classes and their weights its true class areas
(:func:`dunemap.products.stats.class_areas`, so a geographic CRS is weighted right); each point's
stratum is read from the map at the point. Over a set (a zone set's folder or catalog, or maps: :mod:`dunemap.
products.mapset`) the strata are the classes of all its maps, their areas summed over the maps, each map
measured in its own projection (:func:`dunemap.products.stats.set_class_areas`), and each point's map class
is read from the map that owns its ground (:mod:`dunemap.products.lookup`). Reference classes are ids or
class names. Reports are JSON and CSV.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dunemap.accuracy.estimator import (MIN_STRATUM_POINTS, StratifiedEstimate, stehman_estimate, stratified_estimate,
                                        wilson95)
from dunemap.accuracy.sampling import draw_sample
from dunemap.errors import InputError
from dunemap.io.formats import feature_layer
from dunemap.io.reports import claimed_report, write_report
from dunemap.products.classmap import open_class_map
from dunemap.products.lookup import classes_at, quote_ids
from dunemap.products.mapset import resolve_maps
from dunemap.products.stats import class_areas, map_areas
from dunemap.raster.legend import NODATA_CLASS

CLASS_KEYS = ("id", "name", "mapped_area_km2", "area_km2", "area_km2_ci95", "users_accuracy", "users_accuracy_ci95",
              "producers_accuracy", "producers_accuracy_ci95")


def _num(v: float) -> float | None:
    return None if v is None or not math.isfinite(float(v)) else float(v)


@dataclass
class AccuracyAssessment:
    """The stratified estimate of one map's (or one set's) accuracy and class areas (km2), with the classes' ids
    and names."""

    map_path: Path  # the map, or the set's catalog (its first map when listed by hand)
    class_ids: list[int]
    class_names: list[str]
    estimate: StratifiedEstimate
    n_points: int
    area_method: str
    reference: str = ""  # where the reference labels came from
    notes: list[str] = field(default_factory=list)
    estimator: str = "stratified by map class (Olofsson et al. 2014)"
    maps: list[Path] = field(default_factory=list)  # the maps of a set, their areas summed (empty for one map)

    def classes(self) -> list[dict]:
        """One dict per class with the keys of ``CLASS_KEYS`` (None where undefined); ``ci95`` = half-width."""
        e = self.estimate
        ci = e.ci95
        return [
            {"id": cid, "name": name, "mapped_area_km2": float(e.mapped_area[i]), "area_km2": float(e.area[i]),
             "area_km2_ci95": float(ci(e.area_se[i])), "users_accuracy": _num(e.users[i]),
             "users_accuracy_ci95": _num(ci(e.users_se[i])), "producers_accuracy": _num(e.producers[i]),
             "producers_accuracy_ci95": _num(ci(e.producers_se[i]))}
            for i, (cid, name) in enumerate(zip(self.class_ids, self.class_names))
        ]

    def zero_variance_notes(self) -> list[str]:
        """A line for each class whose user's accuracy is 0 or 1 on 2 or more points: its ``± 0.000`` says only
        that the points agree, so Wilson's 95 % score interval for that stratum is given instead."""
        e = self.estimate
        n_i, hits = e.counts.sum(axis=1), np.diag(e.counts)
        low, high = wilson95(hits, n_i)
        lines = []
        for i in np.flatnonzero((n_i >= 2) & ((hits == 0) | (hits == n_i))):
            lines.append(f"note: user's accuracy of {self.class_ids[i]} {self.class_names[i]} is {e.users[i]:.3f} "
                         f"({int(hits[i])} of its {int(n_i[i])} points agree): the sample has no variance there, "
                         f"so its ± 0.000 is no interval; Wilson's 95 % interval is {low[i]:.3f} to {high[i]:.3f}")
        return lines

    def to_dict(self) -> dict:
        e = self.estimate
        return {
            "map": str(self.map_path), **({"maps": [str(m) for m in self.maps]} if self.maps else {}),
            "reference": self.reference, "n_points": self.n_points,
            "estimator": f"{self.estimator}; ci95 = half-width of the 95 % interval",
            "area_method": self.area_method,
            "overall_accuracy": {"estimate": e.overall, "ci95": float(e.ci95(e.overall_se))},
            "classes": self.classes(),
            "error_matrix": {"rows": "map class", "columns": "reference class", "class_ids": self.class_ids,
                             "counts": e.counts.tolist()},
            "notes": self.notes + self.zero_variance_notes(),
        }

    def table(self) -> str:
        def pm(v, c, fmt):
            return "-" if v is None else f"{v:{fmt}} ± {c:{fmt}}"

        lines = [f"{'class':<28} {'mapped km2':>12} {'adjusted km2 (95 %)':>26} {'users (95 %)':>14} "
                 f"{'producers (95 %)':>16}"]
        for c in self.classes():
            lines.append(f"{(str(c['id']) + ' ' + c['name'])[:28]:<28} {c['mapped_area_km2']:>12.4f} "
                         f"{pm(c['area_km2'], c['area_km2_ci95'], '.4f'):>26} "
                         f"{pm(c['users_accuracy'], c['users_accuracy_ci95'], '.3f'):>14} "
                         f"{pm(c['producers_accuracy'], c['producers_accuracy_ci95'], '.3f'):>16}")
        e = self.estimate
        lines.append(f"overall accuracy {e.overall:.3f} ± {e.ci95(e.overall_se):.3f} (95 %), {self.n_points} points")
        lines.extend(self.notes + self.zero_variance_notes())
        return "\n".join(lines)


def estimate_from_points(map_path: Path | Sequence[Path], map_class: np.ndarray, ref_class: np.ndarray,
                         reference: str = "", point_ids: np.ndarray | None = None) -> AccuracyAssessment:
    """Assess ``map_path`` (a class map or a set) from points whose map and reference class ids are given
    (strata = map classes, their areas summed over a set's maps)."""
    stats = map_areas(map_path)
    map_path = stats.map_path
    ids = [r.class_id for r in stats.rows]
    names = [r.class_name for r in stats.rows]
    point_ids = np.arange(1, len(map_class) + 1) if point_ids is None else np.asarray(point_ids)
    q = len(ids)
    unknown = ref_class >= q
    if unknown.any():
        raise InputError(f"{reference}: reference class id(s) {sorted(set(ref_class[unknown].tolist()))} are not "
                         f"classes of {map_path} (0..{q - 1}); points {quote_ids(point_ids[unknown])}")
    counts = np.zeros((q, q), dtype=np.int64)
    np.add.at(counts, (map_class, ref_class), 1)
    mapped = np.array([r.area_km2 for r in stats.rows])
    pixels = np.array([r.pixels for r in stats.rows])
    census = (counts.sum(axis=1) == 1) & (pixels == 1)  # a class mapped on one pixel, and that pixel checked
    for i in np.flatnonzero((mapped > 0) & (counts.sum(axis=1) < MIN_STRATUM_POINTS) & ~census):
        raise InputError(f"{reference}: map class {ids[i]} ({names[i]}) has {int(counts[i].sum())} point(s); "
                         f"each mapped class needs at least {MIN_STRATUM_POINTS} for a variance (add points or merge "
                         "the class)")
    estimate = stratified_estimate(counts, mapped, pixels)
    return AccuracyAssessment(Path(map_path), ids, names, estimate, int(len(map_class)), stats.method, reference,
                              maps=stats.maps)


def _parse_reference(values: np.ndarray, names: list[str], path: Path, point_ids: np.ndarray) -> np.ndarray:
    text = np.array(["" if v is None else str(v).strip() for v in values], dtype=object)
    empty = text == ""
    if empty.any():
        raise InputError(f"{path}: {int(empty.sum())} of {len(text)} points have an empty reference class "
                         f"(point_id {quote_ids(point_ids[empty])}); label every point or remove it")
    lookup = {n.lower(): i for i, n in enumerate(names)}
    out = np.empty(len(text), dtype=np.int64)
    for k, v in enumerate(text):
        if v.lstrip("-").isdigit() or (v.replace(".", "", 1).isdigit() and float(v).is_integer()):
            out[k] = int(float(v))
            if not 0 <= out[k] < len(names):
                raise InputError(f"{path}: point_id {int(point_ids[k])}: reference class {v} is not a class id "
                                 f"(0..{len(names) - 1})")
        elif v.lower() in lookup:
            out[k] = lookup[v.lower()]
        else:
            raise InputError(f"{path}: point_id {int(point_ids[k])}: unknown class name {v!r}; valid: "
                             + ", ".join(names))
    return out


def read_reference_points(points: str | os.PathLike, map_path: str | os.PathLike | Sequence[str | os.PathLike],
                          field_name: str = "ref_class",
                          strata: str | os.PathLike | None = None) -> tuple[np.ndarray, ...]:
    """(point ids, map class at each point, reference class ids, stratum at each point or None) of a labelled
    point file over a class map or a set; the strata are the classes of ``strata`` (a class map or a set) when
    given."""
    import pyogrio.raw
    import shapely
    from pyogrio.errors import DataSourceError

    points = Path(points)
    maps, _ = resolve_maps(map_path)
    strata_maps = None if strata is None else resolve_maps(strata)[0]
    if not points.exists():
        raise InputError(f"{points}: reference points file not found")
    try:
        layer = feature_layer(points)
        info = pyogrio.read_info(points, layer=layer)
        fields = list(info["fields"])
        if field_name not in fields:
            raise InputError(f"{points}: no field {field_name!r}; fields are {fields}")
        columns = [field_name] + (["point_id"] if "point_id" in fields and field_name != "point_id" else [])
        meta, _, wkb, values = pyogrio.raw.read(points, layer=layer, columns=columns)
    except DataSourceError as exc:
        raise InputError(f"{points}: cannot read points ({exc})") from None
    geoms = shapely.from_wkb(wkb)
    if len(geoms) == 0:
        raise InputError(f"{points}: no points")
    if not all(g is not None and g.geom_type == "Point" for g in geoms):
        raise InputError(f"{points}: every feature must be a point")
    got = {name: values[i] for i, name in enumerate(meta["fields"])}  # pyogrio keeps the file's field order
    point_ids = np.asarray(got["point_id"], dtype=np.int64) if "point_id" in got else np.arange(1, len(geoms) + 1)
    x, y = shapely.get_x(geoms), shapely.get_y(geoms)
    legend_names = [r.class_name for r in map_areas(maps).rows]
    map_class, _ = classes_at(maps, x, y, meta.get("crs"), points, point_ids)
    stratum = None if strata_maps is None else classes_at(strata_maps, x, y, meta.get("crs"), points, point_ids)[0]
    return point_ids, map_class, _parse_reference(got[field_name], legend_names, points, point_ids), stratum


def assess_map(map_path: str | os.PathLike | Sequence[str | os.PathLike], points: str | os.PathLike,
               field_name: str = "ref_class", strata: str | os.PathLike | None = None) -> AccuracyAssessment:
    """Accuracy and error-adjusted areas of a class map, or of a set (module docstring), from labelled points.

    The points are taken as a stratified random sample of the map's classes (Olofsson et al. 2014; over a
    set, of the classes of all its maps, as ``dunemap sample`` draws it), or of the classes of ``strata``
    (another class map or set, e.g. the earlier map the points were drawn from with ``dunemap sample``;
    Stehman 2014).
    """
    point_ids, map_class, ref, stratum = read_reference_points(points, map_path, field_name, strata)
    if stratum is None:
        return estimate_from_points(map_path, map_class, ref, f"{points}", point_ids)
    return estimate_with_strata(map_path, strata, stratum, map_class, ref, f"{points}")


def estimate_with_strata(map_path: Path | Sequence[Path], strata: Path | Sequence[Path], stratum: np.ndarray,
                         map_class: np.ndarray, ref_class: np.ndarray, reference: str = "") -> AccuracyAssessment:
    """Assess ``map_path`` (a class map or a set) from points drawn by stratum of the classes of ``strata`` (a
    class map or a set; Stehman 2014); both sets' areas are summed over their maps."""
    stats, strata_stats = map_areas(map_path), map_areas(strata)
    map_path, strata = stats.map_path, strata_stats.map_path
    strata_area = np.array([r.area_km2 for r in strata_stats.rows])
    for h in np.flatnonzero((strata_area > 0) & (np.bincount(stratum, minlength=strata_area.size) < 2)):
        r = strata_stats.rows[h]
        raise InputError(f"{reference}: stratum {r.class_id} ({r.class_name}) of {strata} has "
                         f"{int((stratum == h).sum())} point(s); each stratum needs at least 2 for a variance")
    mapped = np.array([r.area_km2 for r in stats.rows])
    unknown = ref_class >= mapped.size
    if unknown.any():
        raise InputError(f"{reference}: reference class id(s) {sorted(set(ref_class[unknown].tolist()))} are not "
                         f"classes of {map_path} (0..{mapped.size - 1})")
    estimate = stehman_estimate(stratum, map_class, ref_class, strata_area, mapped)
    return AccuracyAssessment(Path(map_path), [r.class_id for r in stats.rows], [r.class_name for r in stats.rows],
                              estimate, len(map_class), stats.method, reference,
                              estimator=f"stratified by the classes of {strata} (Stehman 2014)", maps=stats.maps)


def write_assessment(result: AccuracyAssessment, out: str | os.PathLike) -> tuple[Path, Path]:
    """Write the report pair ``out`` names (:mod:`dunemap.io.reports`): the JSON record and the per-class CSV."""
    return write_report(out, result.to_dict(), list(CLASS_KEYS), result.classes())


def accuracy_report(map_path: str | os.PathLike | Sequence[str | os.PathLike], points: str | os.PathLike,
                    out: str | os.PathLike, field_name: str = "ref_class", overwrite: bool = False,
                    strata: str | os.PathLike | None = None) -> tuple[AccuracyAssessment, Path, Path]:
    """``dunemap accuracy``: :func:`assess_map` and :func:`write_assessment`, the pair claimed first (locked,
    replaced only with ``overwrite``, never over a map, a catalog, the points or the strata)."""
    maps, catalog = resolve_maps(map_path)
    strata_maps, strata_catalog = resolve_maps(strata) if strata else ([], None)
    with claimed_report(out, [*maps, catalog, points, *strata_maps, strata_catalog], overwrite=overwrite):
        result = assess_map(map_path, points, field_name, strata)
        return (result, *write_assessment(result, out))


@dataclass
class TruthComparison:
    """An accuracy assessment whose reference labels were read from a truth raster, beside the truth's own areas."""

    assessment: AccuracyAssessment
    truth_path: Path
    truth_area_km2: np.ndarray  # per class, from the truth raster's true pixel areas
    dropped: int  # sampled points on the truth's nodata, left out

    def inside(self) -> np.ndarray:
        """Per class: whether the truth area lies within the 95 % interval of the error-adjusted area."""
        e = self.assessment.estimate
        return np.abs(self.truth_area_km2 - e.area) <= e.ci95(e.area_se)

    def rows(self) -> list[dict]:
        return [{**c, "truth_area_km2": float(t), "truth_inside_ci95": bool(ok)}
                for c, t, ok in zip(self.assessment.classes(), self.truth_area_km2, self.inside())]

    def counted(self) -> np.ndarray:
        """Classes whose truth or estimated area is not zero: the ones where the interval can miss."""
        return (self.truth_area_km2 > 0) | (self.assessment.estimate.area > 0)

    def inside_count(self) -> tuple[int, int]:
        """(classes whose truth lies inside the 95 % interval, classes counted), over :meth:`counted`."""
        return int((self.inside() & self.counted()).sum()), int(self.counted().sum())

    def table(self) -> str:
        lines = [f"{'class':<28} {'mapped km2':>11} {'adjusted km2 (95 %)':>24} {'truth km2':>10} {'inside':>7}"]
        for r in self.rows():
            if r["mapped_area_km2"] == 0 and r["truth_area_km2"] == 0:
                continue
            lines.append(f"{(str(r['id']) + ' ' + r['name'])[:28]:<28} {r['mapped_area_km2']:>11.3f} "
                         f"{r['area_km2']:>11.3f} ± {r['area_km2_ci95']:<10.3f} {r['truth_area_km2']:>10.3f} "
                         f"{'yes' if r['truth_inside_ci95'] else 'no':>7}")
        inside, counted = self.inside_count()
        e = self.assessment.estimate
        lines.append(f"truth area inside the 95 % interval for {inside} of {counted} classes present in the truth "
                     "or the estimate; overall accuracy "
                     f"{e.overall:.3f} ± {e.ci95(e.overall_se):.3f}; {self.assessment.n_points} points"
                     + (f" ({self.dropped} on truth nodata left out)" if self.dropped else ""))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        inside, counted = self.inside_count()
        return {**self.assessment.to_dict(), "truth": str(self.truth_path), "dropped_on_truth_nodata": self.dropped,
                "classes": self.rows(), "truth_inside_ci95": {"classes": inside, "of": counted}}


def assess_with_truth(map_path: str | os.PathLike, truth_path: str | os.PathLike, n: int,
                      min_per_class: int = MIN_STRATUM_POINTS, seed: int = 0) -> TruthComparison:
    """Sample ``n`` points from the map (stratified), label them from the truth raster, and assess the map.

    The truth raster is a class map of the same classes (uint8, 255 = nodata) in any grid and CRS;
    points on its nodata are left out and counted.
    """
    import pyproj

    map_path, truth_path = Path(map_path), Path(truth_path)
    sample = draw_sample(map_path, n, min_per_class, seed)
    with open_class_map(truth_path, "its pixel areas are unknown") as src:
        x, y = sample.x, sample.y
        crs_map = pyproj.CRS.from_user_input(sample.crs.to_wkt())
        crs_truth = pyproj.CRS.from_user_input(src.crs.to_wkt())
        if not crs_map.equals(crs_truth):
            x, y = pyproj.Transformer.from_crs(crs_map, crs_truth, always_xy=True).transform(x, y)
        truth = np.array([v[0] for v in src.sample(zip(np.asarray(x), np.asarray(y)))], dtype=np.int64)
        inside = (np.asarray(x) >= src.bounds.left) & (np.asarray(x) <= src.bounds.right) & \
                 (np.asarray(y) >= src.bounds.bottom) & (np.asarray(y) <= src.bounds.top)
    keep = inside & (truth != NODATA_CLASS)
    result = estimate_from_points(map_path, sample.map_class[keep], truth[keep], f"{truth_path} (sampled)")
    truth_rows = {r.class_id: r.area_km2 for r in class_areas(truth_path).rows}
    truth_area = np.array([truth_rows.get(cid, 0.0) for cid in result.class_ids])
    return TruthComparison(result, truth_path, truth_area, int((~keep).sum()))


def error_adjusted_table(map_path: str | os.PathLike | Sequence[str | os.PathLike], reference: str | os.PathLike,
                         field_name: str = "ref_class") -> str:
    """Mapped area beside the error-adjusted area (95 % interval) of each class, from labelled reference points."""
    result = assess_map(map_path, reference, field_name)
    lines = [f"error-adjusted areas from {result.n_points} reference points ({reference}):",
             f"{'class':<28} {'mapped_km2':>12} {'adjusted_km2':>14} {'ci95_km2':>10}"]
    for c in result.classes():
        if c["mapped_area_km2"] or c["area_km2"]:
            label = f"{c['id']} {c['name']}"[:28]
            lines.append(f"{label:<28} {c['mapped_area_km2']:>12.4f} {c['area_km2']:>14.4f} {c['area_km2_ci95']:>10.4f}")
    return "\n".join(lines)
