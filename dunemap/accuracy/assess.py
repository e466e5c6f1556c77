"""Accuracy assessment of a class map from reference points (or a truth raster): report, JSON, CSV.

The strata are the map's classes and their weights its true class areas
(:func:`dunemap.products.stats.class_areas`, so a geographic CRS is weighted right); each point's
stratum is read from the map at the point. Reference classes are ids or class names.
"""

from __future__ import annotations

import math
import os
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
from dunemap.products.stats import class_areas
from dunemap.raster.legend import NODATA_CLASS

CLASS_KEYS = ("id", "name", "mapped_area_km2", "area_km2", "area_km2_ci95", "users_accuracy", "users_accuracy_ci95",
              "producers_accuracy", "producers_accuracy_ci95")
_SHOWN_IDS = 10  # point ids quoted in an error


def _num(v: float) -> float | None:
    return None if v is None or not math.isfinite(float(v)) else float(v)


def _ids(ids: np.ndarray) -> str:
    shown = ", ".join(str(int(i)) for i in ids[:_SHOWN_IDS])
    return shown + (f" and {len(ids) - _SHOWN_IDS} more" if len(ids) > _SHOWN_IDS else "")


@dataclass
class AccuracyAssessment:
    """The stratified estimate of one map's accuracy and class areas (km2), with the classes' ids and names."""

    map_path: Path
    class_ids: list[int]
    class_names: list[str]
    estimate: StratifiedEstimate
    n_points: int
    area_method: str
    reference: str = ""  # where the reference labels came from
    notes: list[str] = field(default_factory=list)
    estimator: str = "stratified by map class (Olofsson et al. 2014)"

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
            "map": str(self.map_path), "reference": self.reference, "n_points": self.n_points,
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


def estimate_from_points(map_path: Path, map_class: np.ndarray, ref_class: np.ndarray, reference: str = "",
                         point_ids: np.ndarray | None = None) -> AccuracyAssessment:
    """Assess ``map_path`` from points whose map and reference class ids are given (strata = map classes)."""
    stats = class_areas(map_path)
    ids = [r.class_id for r in stats.rows]
    names = [r.class_name for r in stats.rows]
    point_ids = np.arange(1, len(map_class) + 1) if point_ids is None else np.asarray(point_ids)
    q = len(ids)
    unknown = ref_class >= q
    if unknown.any():
        raise InputError(f"{reference}: reference class id(s) {sorted(set(ref_class[unknown].tolist()))} are not "
                         f"classes of {map_path} (0..{q - 1}); points {_ids(point_ids[unknown])}")
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
    return AccuracyAssessment(Path(map_path), ids, names, estimate, int(len(map_class)), stats.method, reference)


def _parse_reference(values: np.ndarray, names: list[str], path: Path, point_ids: np.ndarray) -> np.ndarray:
    text = np.array(["" if v is None else str(v).strip() for v in values], dtype=object)
    empty = text == ""
    if empty.any():
        raise InputError(f"{path}: {int(empty.sum())} of {len(text)} points have an empty reference class "
                         f"(point_id {_ids(point_ids[empty])}); label every point or remove it")
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


def read_reference_points(points: str | os.PathLike, map_path: str | os.PathLike, field_name: str = "ref_class",
                          strata: str | os.PathLike | None = None) -> tuple[np.ndarray, ...]:
    """(point ids, map class at each point, reference class ids, stratum at each point or None) of a labelled
    point file over a class map; the strata are the classes of the class map ``strata`` when given."""
    import pyogrio.raw
    import shapely
    from pyogrio.errors import DataSourceError

    points, map_path = Path(points), Path(map_path)
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
    legend_names = [r.class_name for r in class_areas(map_path).rows]
    map_class = _classes_at(Path(map_path), x, y, meta.get("crs"), points, point_ids)
    stratum = None if strata is None else _classes_at(Path(strata), x, y, meta.get("crs"), points, point_ids)
    return point_ids, map_class, _parse_reference(got[field_name], legend_names, points, point_ids), stratum


def _classes_at(raster: Path, x: np.ndarray, y: np.ndarray, crs, points: Path, point_ids: np.ndarray) -> np.ndarray:
    """The class of ``raster`` (a class map) under each point (``x``, ``y`` in ``crs``); every point must be on data."""
    import pyproj

    if not crs:  # never assume the map's CRS: points of another CRS would land elsewhere
        raise InputError(f"{points}: the reference points have no CRS; expected a layer with a coordinate "
                         "reference system (assign the one they were made in, e.g. in QGIS)")
    with open_class_map(raster, "its pixel areas are unknown") as src:
        if crs:
            crs_points = pyproj.CRS.from_user_input(crs)
            crs_map = pyproj.CRS.from_user_input(src.crs.to_wkt())
            if not crs_points.equals(crs_map):
                x, y = pyproj.Transformer.from_crs(crs_points, crs_map, always_xy=True).transform(x, y)
        cols, rows = ~src.transform @ (np.asarray(x), np.asarray(y))
        rows, cols = np.floor(rows).astype(np.int64), np.floor(cols).astype(np.int64)
        outside = (rows < 0) | (cols < 0) | (rows >= src.height) | (cols >= src.width)
        if outside.any():
            raise InputError(f"{points}: {int(outside.sum())} point(s) lie outside the map {raster} "
                             f"(point_id {_ids(point_ids[outside])})")
        centres = zip(*(src.transform @ (cols + 0.5, rows + 0.5)))
        values = np.array([v[0] for v in src.sample(centres)], dtype=np.int64)
    nodata = values == NODATA_CLASS
    if nodata.any():
        raise InputError(f"{points}: {int(nodata.sum())} point(s) fall on nodata of {raster} "
                         f"(point_id {_ids(point_ids[nodata])})")
    return values


def assess_map(map_path: str | os.PathLike, points: str | os.PathLike, field_name: str = "ref_class",
               strata: str | os.PathLike | None = None) -> AccuracyAssessment:
    """Accuracy and error-adjusted areas of a class map from labelled reference points.

    The points are taken as a stratified random sample of the map's classes (Olofsson et al. 2014), or of
    the classes of ``strata`` (another class map, e.g. the earlier map the points were drawn from with
    ``dunemap sample``; Stehman 2014).
    """
    point_ids, map_class, ref, stratum = read_reference_points(points, map_path, field_name, strata)
    if stratum is None:
        return estimate_from_points(Path(map_path), map_class, ref, f"{points}", point_ids)
    return estimate_with_strata(Path(map_path), Path(strata), stratum, map_class, ref, f"{points}")


def estimate_with_strata(map_path: Path, strata: Path, stratum: np.ndarray, map_class: np.ndarray,
                         ref_class: np.ndarray, reference: str = "") -> AccuracyAssessment:
    """Assess ``map_path`` from points drawn by stratum of the class map ``strata`` (Stehman 2014)."""
    stats, strata_stats = class_areas(map_path), class_areas(strata)
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
                              estimator=f"stratified by the classes of {strata} (Stehman 2014)")


def write_assessment(result: AccuracyAssessment, out: str | os.PathLike) -> tuple[Path, Path]:
    """Write the report pair ``out`` names (:mod:`dunemap.io.reports`): the JSON record and the per-class CSV."""
    return write_report(out, result.to_dict(), list(CLASS_KEYS), result.classes())


def accuracy_report(map_path: str | os.PathLike, points: str | os.PathLike, out: str | os.PathLike,
                    field_name: str = "ref_class", overwrite: bool = False,
                    strata: str | os.PathLike | None = None) -> tuple[AccuracyAssessment, Path, Path]:
    """``dunemap accuracy``: :func:`assess_map` and :func:`write_assessment`, the pair claimed first (locked,
    replaced only with ``overwrite``, never over the map, the points or the strata)."""
    with claimed_report(out, [map_path, points, *([strata] if strata else [])], overwrite=overwrite):
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


def error_adjusted_table(map_path: str | os.PathLike, reference: str | os.PathLike, field_name: str = "ref_class") -> str:
    """Mapped area beside the error-adjusted area (95 % interval) of each class, from labelled reference points."""
    result = assess_map(map_path, reference, field_name)
    lines = [f"error-adjusted areas from {result.n_points} reference points ({reference}):",
             f"{'class':<28} {'mapped_km2':>12} {'adjusted_km2':>14} {'ci95_km2':>10}"]
    for c in result.classes():
        if c["mapped_area_km2"] or c["area_km2"]:
            label = f"{c['id']} {c['name']}"[:28]
            lines.append(f"{label:<28} {c['mapped_area_km2']:>12.4f} {c['area_km2']:>14.4f} {c['area_km2_ci95']:>10.4f}")
    return "\n".join(lines)
