"""``dunemap sample`` and ``dunemap accuracy`` on real GeoTIFFs and GeoPackages; the Olofsson et al. 2014 worked example."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from affine import Affine

from dunemap.accuracy.estimator import stratified_estimate
from dunemap.accuracy.sampling import allocate
from dunemap.cli import main
from dunemap.raster.legend import ClassLegend

# Olofsson et al. 2014, section 5 and Table 8: deforestation, forest gain, stable forest, stable non-forest.
NAMES = ["deforestation", "forest_gain", "stable_forest", "stable_nonforest"]
PIXELS_30M = np.array([200_000, 150_000, 3_200_000, 6_450_000])
MATRIX = np.array([[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]])
# The paper's figures: area in ha +- 95 % half-width, user's and producer's accuracy +- half-width.
PAPER_AREA_HA = [(21_158, 6_158), (11_686, 3_756), (285_770, 15_510), (581_386, 16_282)]
PAPER_USERS = [(0.88, 0.07), (0.73, 0.10), (0.93, 0.04), (0.96, 0.02)]
PAPER_PRODUCERS_CLASS_1 = (0.75, 0.21)
PAPER_OVERALL = (0.95, 0.02)


def write_class_map(path: Path, classes: np.ndarray, names: list[str], transform: Affine, crs: str) -> Path:
    legend = ClassLegend.build(names, [(200, 0, 0), (0, 200, 0), (0, 90, 0), (230, 220, 170), (0, 0, 200)][:len(names)])
    with rasterio.open(path, "w", driver="GTiff", height=classes.shape[0], width=classes.shape[1], count=1,
                       dtype="uint8", nodata=255, crs=crs, transform=transform) as dst:
        dst.write(classes.astype(np.uint8), 1)
        dst.update_tags(**legend.tags())
        dst.write_colormap(1, legend.colormap())
    return path


def write_points(path: Path, x, y, ref: list, crs: str, ids=None) -> Path:
    n = len(x)
    ids = np.arange(1, n + 1, dtype=np.int32) if ids is None else np.asarray(ids, dtype=np.int32)
    geometry = shapely.to_wkb(shapely.points(np.asarray(x, float), np.asarray(y, float)))
    pyogrio.raw.write(path, geometry, [ids, np.array(ref, dtype=object)], ["point_id", "ref_class"], crs=crs,
                      driver="GPKG", geometry_type="Point")
    return path


@pytest.fixture(scope="module")
def olofsson(tmp_path_factory) -> tuple[Path, Path]:
    """The worked example's map at 1/100 of its pixel count, 300 m pixels (100 x the 30 m pixel area) in an
    equal-area CRS, so every class keeps its area exactly; and its 640 labelled points."""
    root = tmp_path_factory.mktemp("olofsson")
    counts = PIXELS_30M // 100  # 2000 / 1500 / 32000 / 64500 pixels of 300 m = the paper's areas
    flat = np.repeat(np.arange(4), counts)
    classes = flat.reshape(250, 400)
    transform = Affine(300, 0, 0, 0, -300, 75_000)  # EPSG:6933 is equal-area: a cell's area is 90,000 m2 exactly
    map_path = write_class_map(root / "map.tif", classes, NAMES, transform, "EPSG:6933")
    xs, ys, refs = [], [], []
    for i in range(4):
        cells = np.flatnonzero(flat == i)[:: counts[i] // MATRIX[i].sum()][: MATRIX[i].sum()]  # distinct pixels
        r, c = np.divmod(cells, 400)
        x, y = transform @ (c + 0.5, r + 0.5)
        xs += list(x)
        ys += list(y)
        labels = np.repeat(np.arange(4), MATRIX[i])
        refs += [NAMES[k] if k % 2 else str(k) for k in labels]  # names and ids both accepted
    return map_path, write_points(root / "points.gpkg", xs, ys, refs, "EPSG:6933")


def test_worked_example_of_olofsson_2014_through_the_cli(olofsson, tmp_path) -> None:
    map_path, points = olofsson
    out = tmp_path / "accuracy.json"
    proc = subprocess.run([sys.executable, "-m", "dunemap", "accuracy", str(map_path), "--reference", str(points),
                           "--field", "ref_class", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["n_points"] == 640
    assert report["error_matrix"]["counts"] == MATRIX.tolist()
    classes = report["classes"]
    assert [c["name"] for c in classes] == NAMES
    assert round(classes[0]["mapped_area_km2"] * 100) == 18_000  # ha
    for c, (area, ci), (ua, ua_ci) in zip(classes, PAPER_AREA_HA, PAPER_USERS):
        assert (round(c["area_km2"] * 100), round(c["area_km2_ci95"] * 100)) == (area, ci), c
        assert (round(c["users_accuracy"], 2), round(c["users_accuracy_ci95"], 2)) == (ua, ua_ci), c
    assert (round(classes[0]["producers_accuracy"], 2), round(classes[0]["producers_accuracy_ci95"], 2)) == \
        PAPER_PRODUCERS_CLASS_1
    oa = report["overall_accuracy"]
    assert (round(oa["estimate"], 2), round(oa["ci95"], 2)) == PAPER_OVERALL
    lines = (tmp_path / "accuracy.csv").read_text().splitlines()
    assert lines[0].split(",")[:4] == ["id", "name", "mapped_area_km2", "area_km2"] and len(lines) == 5
    assert "211.5776 ± 61.5763" in proc.stdout and "overall accuracy 0.947" in proc.stdout


def test_estimator_with_pixel_counts_equals_estimator_with_areas() -> None:
    by_count = stratified_estimate(MATRIX, PIXELS_30M)
    by_area = stratified_estimate(MATRIX, PIXELS_30M * 0.09)
    np.testing.assert_allclose(by_count.area * 0.09, by_area.area)
    np.testing.assert_allclose(by_count.producers_se, by_area.producers_se)


@pytest.mark.parametrize("case,needle", [
    ("empty", "2 of 6 points have an empty reference class (point_id 2, 5)"),
    ("unknown", "point_id 3: unknown class name 'dune'"),
    ("outside", "1 point(s) lie outside the map"),
    ("nodata", "1 point(s) fall on nodata"),
    ("thin", "map class 1 (b) has 1 point(s)"),
])
def test_bad_reference_points_are_one_line_errors(case, needle, tmp_path, capsys) -> None:
    classes = np.zeros((4, 4), np.uint8)
    classes[:, 2:] = 1
    classes[3, 3] = 255
    map_path = write_class_map(tmp_path / "m.tif", classes, ["a", "b"], Affine(10, 0, 0, 0, -10, 40), "EPSG:32633")
    x = [5, 15, 5, 15, 25, 35]
    y = [35, 25, 15, 5, 35, 25]
    ref = ["a", "0", "b", "1", "b", "1"]
    if case == "empty":
        ref[1], ref[4] = None, ""
    if case == "unknown":
        ref[2] = "dune"
    if case == "outside":
        x[0] = 45
    if case == "nodata":
        x[5], y[5] = 35, 5
    if case == "thin":
        x[4] = 5
    points = write_points(tmp_path / "p.gpkg", x, y, ref, "EPSG:32633")
    out = tmp_path / "acc.json"
    assert main(["accuracy", str(map_path), "--reference", str(points), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err
    assert not out.exists() and not out.with_suffix(".csv").exists()


def test_a_class_mapped_on_one_pixel_is_censused_by_its_one_point(tmp_path) -> None:
    from dunemap.accuracy.assess import assess_with_truth

    classes = np.zeros((6, 6), np.uint8)
    classes[:, 3:] = 1
    classes[2, 4] = 2  # class c mapped on a single pixel: one point checks all of it
    transform = Affine(10, 0, 500_000, 0, -10, 4_000_060)
    map_path = write_class_map(tmp_path / "m.tif", classes, ["a", "b", "c"], transform, "EPSG:32633")
    truth = classes.copy()
    truth[2, 4] = 1  # and that pixel is wrong
    truth_path = write_class_map(tmp_path / "t.tif", truth, ["a", "b", "c"], transform, "EPSG:32633")
    e = assess_with_truth(map_path, truth_path, n=12, min_per_class=4, seed=0).assessment.estimate
    assert e.counts[2].sum() == 1 and e.users[2] == 0.0 and e.users_se[2] == 0.0  # a census: no sampling variance
    assert np.isfinite(e.area_se).all() and np.isfinite(e.overall_se)
    # two pixels of class c with one point is a sample, not a census: still refused
    classes[3, 4] = 2
    map_path = write_class_map(tmp_path / "m2.tif", classes, ["a", "b", "c"], transform, "EPSG:32633")
    x, y = transform @ (np.array([0.5, 1.5, 3.5, 5.5, 4.5]), np.array([0.5, 1.5, 0.5, 1.5, 2.5]))
    points = write_points(tmp_path / "p.gpkg", x, y, ["a", "a", "b", "b", "b"], "EPSG:32633")
    assert main(["accuracy", str(map_path), "--reference", str(points), "--out", str(tmp_path / "a.json")]) == 1


def test_allocation_gives_the_minimum_then_area_shares() -> None:
    np.testing.assert_array_equal(allocate(np.array([1.0, 3.0, 6.0]), 35, 5), [7, 11, 17])
    np.testing.assert_array_equal(allocate(np.array([1.0, 1.0, 8.0]), 40, 5), [8, 7, 25])  # tie: lower id
    assert allocate(np.array([3.0, 3.0, 3.0]), 10, 0).sum() == 10


def test_sample_is_deterministic_stratified_and_never_on_nodata(tmp_path, capsys) -> None:
    rng = np.random.default_rng(0)
    classes = rng.choice([0, 2, 255], size=(60, 50), p=[0.6, 0.3, 0.1]).astype(np.uint8)
    classes[0, :3] = 1  # a class of 3 pixels, asked for 5: taken whole and reported
    transform = Affine(10, 0, 500_000, 0, -10, 7_000_000)
    map_path = write_class_map(tmp_path / "m.tif", classes, ["a", "b", "c"], transform, "EPSG:32633")
    args = ["sample", str(map_path), "--n", "60", "--min-per-class", "5", "--seed", "3"]
    assert main([*args, "--out", str(tmp_path / "one.gpkg")]) == 0
    assert "only 3 pixels: taken whole" in capsys.readouterr().out
    assert main([*args, "--out", str(tmp_path / "two.gpkg")]) == 0
    meta, _, wkb, fields = pyogrio.raw.read(tmp_path / "one.gpkg", layer="points")
    _, _, wkb2, _ = pyogrio.raw.read(tmp_path / "two.gpkg", layer="points")
    assert list(meta["fields"]) == ["point_id", "ref_class"]  # blind: nothing says what the map shows
    assert list(wkb) == list(wkb2)  # same seed, same points
    pts = shapely.from_wkb(wkb)
    col, row = ~transform @ (shapely.get_x(pts), shapely.get_y(pts))
    assert np.all(col % 1 == 0.5) and np.all(row % 1 == 0.5)  # pixel centres
    values = classes[row.astype(int), col.astype(int)]
    assert (values != 255).all()
    assert len(set(zip(row.astype(int), col.astype(int)))) == len(pts)  # no pixel twice
    assert np.bincount(values, minlength=3)[1] == 3 and len(pts) == 58  # 60 asked, class b short by 2
    assert all(v is None for v in fields[1])
    # shuffled: ids run 1..n in file order, and neither the class nor the raster position follows them
    np.testing.assert_array_equal(fields[0], np.arange(1, 59))
    assert (np.diff(values.astype(int)) < 0).any() and (np.diff(row * 50 + col) < 0).any()
    first = {int(v): int(np.flatnonzero(values == v)[0]) for v in (0, 2)}
    assert max(first.values()) < 20  # both big classes start near the top: no class-by-class blocks
    assert main([*args, "--out", str(tmp_path / "one.gpkg")]) == 1  # never over an existing file silently
    assert "already exists" in capsys.readouterr().err


def test_stats_prints_the_error_adjusted_area_beside_the_mapped_area(olofsson, tmp_path, capsys) -> None:
    map_path, points = olofsson
    assert main(["stats", str(map_path), "--out", str(tmp_path / "areas.csv"), "--reference", str(points)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("0 deforestation"))
    assert row.split()[2:] == ["180.0000", "211.5776", "61.5763"]  # mapped, adjusted, 95 % half-width (km2)


def test_assess_with_truth_recovers_the_truth_areas(tmp_path) -> None:
    from dunemap.accuracy.assess import assess_with_truth

    rng = np.random.default_rng(1)
    truth = rng.choice([0, 1, 2], size=(80, 90), p=[0.5, 0.3, 0.2]).astype(np.uint8)
    mapped = truth.copy()
    wrong = rng.random(truth.shape) < 0.2
    mapped[wrong] = (truth[wrong] + 1) % 3  # 20 % errors move area between classes
    truth[:2] = 255  # truth nodata under some sampled points: left out and counted
    transform = Affine(30, 0, 300_000, 0, -30, 5_000_000)
    map_path = write_class_map(tmp_path / "map.tif", mapped, ["a", "b", "c"], transform, "EPSG:32633")
    truth_path = write_class_map(tmp_path / "truth.tif", truth, ["a", "b", "c"], transform, "EPSG:32633")
    result = assess_with_truth(map_path, truth_path, n=1500, min_per_class=100, seed=0)
    assert result.dropped > 0 and result.assessment.n_points == 1500 - result.dropped
    e = result.assessment.estimate
    assert np.abs(e.area - result.truth_area_km2).max() < np.abs(e.mapped_area - result.truth_area_km2).max()
    assert result.inside_count() == (3, 3)
    assert "truth area inside the 95 % interval for 3 of 3 classes" in result.table()


def _catalog_map(tmp_path: Path) -> tuple[Path, np.ndarray, Affine]:
    rng = np.random.default_rng(5)
    classes = rng.choice([0, 1, 2, 255], size=(40, 30), p=[0.5, 0.3, 0.15, 0.05]).astype(np.uint8)
    transform = Affine(10, 0, 500_000, 0, -10, 7_000_000)
    return (write_class_map(tmp_path / "m.tif", classes, ["interdune", "crescentic", "linear"], transform,
                            "EPSG:32633"), classes, transform)


def test_sample_geopackage_edits_ref_class_with_a_dropdown_of_catalog_labels(tmp_path) -> None:
    import sqlite3
    import xml.etree.ElementTree as ET

    map_path, classes, transform = _catalog_map(tmp_path)
    out = tmp_path / "p.gpkg"
    assert main(["sample", str(map_path), "--n", "30", "--min-per-class", "5", "--out", str(out)]) == 0
    with sqlite3.connect(out) as db:
        (table, default, qml, when), = db.execute(
            "SELECT f_table_name, useAsDefault, styleQML, update_time FROM layer_styles")
        (version,), = db.execute("PRAGMA user_version")
    assert version == 10200  # GeoPackage 1.2: GDAL 3.6 / QGIS 3.22 read it without a warning (1.4 warns)
    assert __import__("re").fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", when), when  # GPKG DATETIME
    assert table == "points" and default == 1
    root = ET.fromstring(qml.split("\n", 1)[1])
    field = root.find("fieldConfiguration/field")
    assert field.get("name") == "ref_class" and field.find("editWidget").get("type") == "ValueMap"
    choices = [(o.get("name"), o.get("value")) for o in root.iter("Option") if o.get("type") == "QString"]
    assert choices == [("Interdune", "0"), ("Crescentic (barchan)", "1"), ("Linear (seif)", "2")]
    # an expert labels every point (here: as the map says) and accuracy reads the map class from the map itself
    _, _, wkb, fields = pyogrio.raw.read(out, layer="points")
    pts = shapely.from_wkb(wkb)
    col, row = ~transform @ (shapely.get_x(pts), shapely.get_y(pts))
    truth = classes[row.astype(int), col.astype(int)]
    labelled = write_points(tmp_path / "labelled.gpkg", shapely.get_x(pts), shapely.get_y(pts),
                            [str(v) for v in truth], "EPSG:32633", ids=fields[0])
    report = tmp_path / "acc.json"
    assert main(["accuracy", str(map_path), "--reference", str(labelled), "--out", str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["overall_accuracy"]["estimate"] == 1.0
    assert result["error_matrix"]["counts"] == np.diag(np.bincount(truth, minlength=3)).tolist()


def test_the_per_class_example_of_sample_help_runs(tmp_path, capsys) -> None:
    from dunemap.cli import build_parser, leaf_parsers

    help_text = " ".join(leaf_parsers(build_parser())["sample"].format_help().split())
    example = help_text.split("e.g. ")[1].split()[0]
    assert example == "0=50,crescentic=80"
    map_path, _, _ = _catalog_map(tmp_path)
    assert main(["sample", str(map_path), "--per-class", example, "--out", str(tmp_path / "p.gpkg")]) == 0
    assert pyogrio.read_info(tmp_path / "p.gpkg", layer="points")["features"] == 130


def test_sample_size_for_a_target_standard_error_is_olofsson_2014_eq_13(tmp_path, capsys) -> None:
    from dunemap.accuracy.sampling import planned_size

    # Olofsson et al. 2014, section 5.1: W = 0.02, 0.015, 0.32, 0.645, conjectured U = 0.7, 0.6, 0.9, 0.95,
    # S(O) = 0.01 -> n = 641 (the population term is negligible for 10^7 pixels)
    w = PIXELS_30M / PIXELS_30M.sum()
    assert planned_size(w, 0.01, np.array([0.7, 0.6, 0.9, 0.95])) == 641
    assert planned_size(w, 0.01, np.array([0.7, 0.6, 0.9, 0.95]), pixels=int(PIXELS_30M.sum())) == 641
    assert planned_size(w, 0.02, 0.8) == 400  # (0.4 / 0.02)^2
    map_path, _, _ = _catalog_map(tmp_path)
    assert main(["sample", str(map_path), "--target-se", "0.05", "--min-per-class", "3",
                 "--out", str(tmp_path / "p.gpkg")]) == 0
    out = capsys.readouterr().out
    n = planned_size(np.array([1.0]), 0.05, 0.8, pixels=40 * 30)  # every class at U = 0.8: the weights cancel
    assert f"{n} points" in out and "Olofsson et al. 2014, eq. 13" in out
    assert pyogrio.read_info(tmp_path / "p.gpkg", layer="points")["features"] == n
    assert main(["sample", str(map_path), "--target-se", "0.05", "--n", "10", "--out", str(tmp_path / "q.gpkg")]) == 1
    assert "give one of --n N" in capsys.readouterr().err


def _olofsson_points() -> tuple[np.ndarray, np.ndarray]:
    map_class = np.repeat(np.arange(4), MATRIX.sum(axis=1))
    return map_class, np.concatenate([np.repeat(np.arange(4), row) for row in MATRIX])


def test_stehman_with_the_map_classes_as_strata_is_olofsson() -> None:
    from dunemap.accuracy.estimator import stehman_estimate

    map_class, ref_class = _olofsson_points()
    area = PIXELS_30M * 0.09
    a, b = stratified_estimate(MATRIX, area), stehman_estimate(map_class, map_class, ref_class, area, area)
    for key in ("overall", "overall_se", "users", "users_se", "producers", "producers_se", "area", "area_se",
                "proportions"):
        np.testing.assert_allclose(getattr(b, key), getattr(a, key), rtol=1e-12, err_msg=key)
    np.testing.assert_array_equal(b.counts, MATRIX)


def test_stehman_estimates_are_unbiased_and_cover_when_strata_are_not_the_map() -> None:
    """A known population; the strata are an older map that disagrees with the map in 30 % of the pixels.
    Over 400 stratified samples the estimates centre on the truth and the 95 % intervals cover it."""
    from dunemap.accuracy.estimator import stehman_estimate

    rng = np.random.default_rng(7)
    truth = rng.choice(3, size=40_000, p=[0.6, 0.3, 0.1])
    mapped = np.where(rng.random(truth.size) < 0.8, truth, rng.choice(3, size=truth.size))
    strata = np.where(rng.random(truth.size) < 0.7, mapped, rng.choice(3, size=truth.size))
    true_oa = (mapped == truth).mean()
    true_area = np.bincount(truth, minlength=3) / truth.size
    true_ua = np.array([(truth[mapped == i] == i).mean() for i in range(3)])
    stratum_size = np.bincount(strata, minlength=3).astype(float)
    members = [np.flatnonzero(strata == h) for h in range(3)]
    hits, estimates = np.zeros(3 + 3 + 1), []
    for _ in range(400):
        pick = np.concatenate([rng.choice(m, size=60, replace=False) for m in members])
        e = stehman_estimate(strata[pick], mapped[pick], truth[pick], stratum_size, np.bincount(mapped, minlength=3))
        estimates.append(np.r_[e.overall, e.area / truth.size, e.users])
        hits += np.abs(np.r_[e.overall, e.area / truth.size, e.users] - np.r_[true_oa, true_area, true_ua]) <= \
            1.96 * np.r_[e.overall_se, e.area_se / truth.size, e.users_se]
    np.testing.assert_allclose(np.mean(estimates, axis=0), np.r_[true_oa, true_area, true_ua], atol=0.01)
    # Wald intervals: near 95 %, a little under for the rare class (10 % of the ground, 180 points in all)
    assert ((hits / 400 > 0.87) & (hits / 400 < 0.99)).all() and np.mean(hits / 400) > 0.92, hits / 400


def test_accuracy_with_strata_of_an_earlier_map_through_the_cli(tmp_path, capsys) -> None:
    from dunemap.accuracy.estimator import stehman_estimate
    from dunemap.products.stats import class_areas

    rng = np.random.default_rng(3)
    truth = rng.choice([0, 1, 2], size=(60, 60), p=[0.5, 0.3, 0.2]).astype(np.uint8)
    new = np.where(rng.random(truth.shape) < 0.85, truth, (truth + 1) % 3).astype(np.uint8)
    old = np.where(rng.random(truth.shape) < 0.7, new, (new + 2) % 3).astype(np.uint8)
    transform = Affine(10, 0, 500_000, 0, -10, 7_000_000)
    names = ["interdune", "crescentic", "linear"]
    old_map = write_class_map(tmp_path / "old.tif", old, names, transform, "EPSG:32633")
    new_map = write_class_map(tmp_path / "new.tif", new, names, transform, "EPSG:32633")
    points = tmp_path / "p.gpkg"
    assert main(["sample", str(old_map), "--n", "300", "--min-per-class", "50", "--out", str(points)]) == 0
    _, _, wkb, ids = pyogrio.raw.read(points, layer="points")
    pts = shapely.from_wkb(wkb)
    col, row = ~transform @ (shapely.get_x(pts), shapely.get_y(pts))
    labels = truth[row.astype(int), col.astype(int)]
    labelled = write_points(tmp_path / "l.gpkg", shapely.get_x(pts), shapely.get_y(pts), [str(v) for v in labels],
                            "EPSG:32633", ids=ids[0])
    out = tmp_path / "acc.json"
    capsys.readouterr()
    assert main(["accuracy", str(new_map), "--reference", str(labelled), "--strata", str(old_map),
                 "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["estimator"].startswith(f"stratified by the classes of {old_map} (Stehman 2014)")
    # the CLI read each point's stratum from the old map, its map class from the new one, its label from the file
    mine = stehman_estimate(old[row.astype(int), col.astype(int)], new[row.astype(int), col.astype(int)], labels,
                            *[np.array([r.area_km2 for r in class_areas(m).rows]) for m in (old_map, new_map)])
    oa = report["overall_accuracy"]
    assert (oa["estimate"], oa["ci95"]) == pytest.approx((mine.overall, 1.96 * mine.overall_se))
    assert [c["area_km2"] for c in report["classes"]] == pytest.approx(list(mine.area))
    assert [c["users_accuracy"] for c in report["classes"]] == pytest.approx(list(mine.users))
    assert abs(oa["estimate"] - (new == truth).mean()) <= 1.5 * oa["ci95"]  # and near the truth
    assert "Stehman" not in capsys.readouterr().err


def test_a_users_accuracy_of_one_gets_a_wilson_interval_not_zero(tmp_path, capsys) -> None:
    from dunemap.accuracy.estimator import wilson95

    low, high = wilson95(np.array([10, 0, 5]), np.array([10, 10, 10]))
    np.testing.assert_allclose(low[:2], [10 / (10 + 1.96**2), 0.0])
    np.testing.assert_allclose(high[:2], [1.0, 1.96**2 / (10 + 1.96**2)])
    assert 0 < low[2] < 0.5 < high[2] < 1
    classes = np.zeros((10, 10), np.uint8)
    classes[:, 5:] = 1
    transform = Affine(10, 0, 500_000, 0, -10, 7_000_000)
    map_path = write_class_map(tmp_path / "m.tif", classes, ["a", "b"], transform, "EPSG:32633")
    cols = np.r_[np.arange(5) + 0.5, np.arange(5) + 0.5, np.arange(5, 10) + 0.5, np.arange(5, 10) + 0.5]
    rows = np.r_[np.full(5, 0.5), np.full(5, 1.5), np.full(5, 0.5), np.full(5, 1.5)]
    x, y = transform @ (cols, rows)
    ref = ["a"] * 10 + ["b"] * 8 + ["a"] * 2  # class a: all 10 right; class b: 8 of 10
    points = write_points(tmp_path / "p.gpkg", x, y, ref, "EPSG:32633")
    assert main(["accuracy", str(map_path), "--reference", str(points), "--out", str(tmp_path / "a.json")]) == 0
    out = capsys.readouterr().out
    note = next(line for line in out.splitlines() if line.startswith("note:"))
    assert "0 a is 1.000 (10 of its 10 points agree)" in note and "Wilson's 95 % interval is 0.722 to 1.000" in note
    assert sum(line.startswith("note:") for line in out.splitlines()) == 1  # class b has a variance
    assert note in json.loads((tmp_path / "a.json").read_text())["notes"]
