"""``sample``, ``accuracy`` and ``vectorize`` over a zone set: one draw, one estimate, one layer for two UTM zones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import rasterio
import shapely
from products_helpers import write_zone_set, zone_set_truth
from pyproj import Transformer

from dunemap.accuracy.sampling import allocate
from dunemap.cli import main
from dunemap.products.stats import class_areas

MAPS = ("utm33S.tif", "utm34S.tif")


def dunemap(*args: str) -> subprocess.CompletedProcess:
    """The real command line, in a child process."""
    return subprocess.run([sys.executable, "-m", "dunemap", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def desert(tmp_path_factory) -> Path:
    return write_zone_set(tmp_path_factory.mktemp("zones") / "DESERT")


@pytest.fixture(scope="module")
def zone_km2(desert) -> np.ndarray:
    """km2 per class added up over the zone maps, each measured alone in its own projection."""
    total = np.zeros(4)
    for name in MAPS:
        for r in class_areas(desert / name).rows:
            total[r.class_id] += r.area_km2
    return total


@pytest.fixture(scope="module")
def drawn(desert, tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """``dunemap sample DESERT`` in a child process: (points file, lon, lat, point ids, zone of each point)."""
    out = tmp_path_factory.mktemp("sample") / "points.gpkg"
    done = dunemap("sample", str(desert), "--n", "60", "--min-per-class", "5", "--seed", "2", "--out", str(out))
    assert done.returncode == 0, done.stderr
    meta, _, wkb, fields = pyogrio.raw.read(out, layer="points")
    assert list(meta["fields"]) == ["point_id", "ref_class", "zone"]  # blind: the zone, never the class
    assert pyogrio.read_info(out, layer="points")["crs"] == "EPSG:4326"
    pts = shapely.from_wkb(wkb)
    return out, shapely.get_x(pts), shapely.get_y(pts), fields[0], list(fields[2])


def map_values(desert: Path, lon: np.ndarray, lat: np.ndarray, zones: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(class of the zone map each point names at the point, the point's pixel offsets from a pixel centre)."""
    values, offsets = np.empty(len(lon), dtype=int), np.empty((len(lon), 2))
    for zone in set(zones):
        at = np.array(zones) == zone
        with rasterio.open(desert / f"utm{zone}.tif") as src:
            x, y = Transformer.from_crs(4326, src.crs.to_epsg(), always_xy=True).transform(lon[at], lat[at])
            col, row = ~src.transform @ (x, y)
            values[at] = src.read(1)[np.floor(row).astype(int), np.floor(col).astype(int)]
            offsets[at] = np.column_stack([col % 1, row % 1])
    return values, offsets


def write_labels(path: Path, lon, lat, ids, ref) -> Path:
    pyogrio.raw.write(path, shapely.to_wkb(shapely.points(lon, lat)), [np.asarray(ids, np.int32),
                      np.array([str(v) for v in ref], dtype=object)], ["point_id", "ref_class"], crs="EPSG:4326",
                      driver="GPKG", geometry_type="Point")
    return path


def test_set_sample_is_one_draw_by_the_summed_areas_on_valid_pixels(desert, zone_km2, drawn) -> None:
    _, lon, lat, ids, zones = drawn
    values, offsets = map_values(desert, lon, lat, zones)
    assert (values != 255).all()  # every point on a mapped pixel of the zone map it names ...
    np.testing.assert_allclose(offsets, 0.5, atol=1e-6)  # ... at that pixel's centre
    np.testing.assert_array_equal(values, zone_set_truth(lon, lat))  # the ground there has the map's class
    owner = np.where(lon < 18.0, "33S", "34S")  # the zone rule: 18°E is the border here
    assert list(owner) == zones and set(zones) == {"33S", "34S"}
    np.testing.assert_array_equal(np.bincount(values, minlength=4), allocate(zone_km2, 60, 5))
    np.testing.assert_array_equal(ids, np.arange(1, 61))


def test_set_accuracy_with_perfect_labels_gives_oa_one_and_the_summed_areas(desert, zone_km2, drawn, tmp_path,
                                                                           capsys) -> None:
    _, lon, lat, ids, zones = drawn
    labelled = write_labels(tmp_path / "labelled.gpkg", lon, lat, ids, zone_set_truth(lon, lat))
    done = dunemap("accuracy", str(desert), "--reference", str(labelled), "--out", str(tmp_path / "acc.json"))
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "acc.json").read_text())
    assert report["overall_accuracy"] == {"estimate": pytest.approx(1.0, rel=1e-12), "ci95": 0.0}
    assert [Path(m).name for m in report["maps"]] == list(MAPS) and report["map"].endswith("catalog.json")
    for c in report["classes"]:
        assert c["mapped_area_km2"] == pytest.approx(zone_km2[c["id"]], rel=1e-12)
        assert c["area_km2"] == pytest.approx(zone_km2[c["id"]], rel=1e-12)
    # stats of the set with the same points: the error-adjusted areas beside the mapped ones
    assert main(["stats", str(desert), "--out", str(tmp_path / "areas.csv"), "--reference", str(labelled)]) == 0
    out = capsys.readouterr().out
    assert "error-adjusted areas from 60 reference points" in out
    row = next(line for line in out.splitlines() if line.startswith("1 crescentic "))
    assert [float(v) for v in row.split()[2:4]] == pytest.approx([zone_km2[1]] * 2, abs=1e-4)


def test_set_accuracy_from_known_truth_is_the_hand_computation(desert, zone_km2, drawn, tmp_path, capsys) -> None:
    _, lon, lat, ids, zones = drawn
    map_class = zone_set_truth(lon, lat)
    ref = map_class.copy()
    ref[(map_class == 1) & (lon > 18.0)] = 0  # the truth: class 1 east of the border is really interdune ...
    ref[(map_class == 0) & (lat > -23.998)] = 3  # ... and the north of class 0 is class 3
    assert (ref != map_class).any() and ((ref == map_class) & (map_class == 1)).any()
    labelled = write_labels(tmp_path / "truth.gpkg", lon, lat, ids, ref)
    assert main(["accuracy", str(desert / "catalog.json"), "--reference", str(labelled),
                 "--out", str(tmp_path / "acc.json")]) == 0
    report = json.loads((tmp_path / "acc.json").read_text())
    # Olofsson et al. 2014 by hand: W_i from the zones' summed areas, p_ij = W_i n_ij / n_i.
    n = np.zeros((4, 4))
    np.add.at(n, (map_class, ref), 1)
    w = zone_km2 / zone_km2.sum()
    p = w[:, None] * n / n.sum(axis=1, keepdims=True)
    users = np.diag(n) / n.sum(axis=1)
    overall_se = np.sqrt((w**2 * users * (1 - users) / (n.sum(axis=1) - 1)).sum())
    assert report["error_matrix"]["counts"] == n.astype(int).tolist()
    assert report["overall_accuracy"]["estimate"] == pytest.approx(np.trace(p), rel=1e-12)
    assert report["overall_accuracy"]["ci95"] == pytest.approx(1.96 * overall_se, rel=1e-12)
    got_area = [c["area_km2"] for c in report["classes"]]
    np.testing.assert_allclose(got_area, p.sum(axis=0) * zone_km2.sum(), rtol=1e-12)
    # the same points stratified by the set's own classes through --strata: Stehman 2014 gives the same estimates
    assert main(["accuracy", str(desert), "--reference", str(labelled), "--strata", str(desert),
                 "--out", str(tmp_path / "stehman.json")]) == 0
    stehman = json.loads((tmp_path / "stehman.json").read_text())
    assert stehman["overall_accuracy"]["estimate"] == pytest.approx(np.trace(p), rel=1e-12)
    np.testing.assert_allclose([c["area_km2"] for c in stehman["classes"]], got_area, rtol=1e-12)
    assert "Stehman 2014" in stehman["estimator"]
    capsys.readouterr()


def test_a_point_on_no_map_of_the_set_is_one_line(desert, drawn, tmp_path, capsys) -> None:
    _, lon, lat, ids, _ = drawn
    lon, lat = lon.copy(), lat.copy()
    lon[4], lat[4] = 18.5, -24.0  # east of the box: nodata or outside in both zones
    labelled = write_labels(tmp_path / "off.gpkg", lon, lat, ids, zone_set_truth(lon, lat))
    assert main(["accuracy", str(desert), "--reference", str(labelled), "--out", str(tmp_path / "a.json")]) == 1
    err = capsys.readouterr().err
    assert "1 point(s) fall on no map's data" in err and "(point_id 5)" in err and "Traceback" not in err
    assert not (tmp_path / "a.json").exists()


def test_set_vectorize_is_one_layer_in_wgs84_with_each_zones_true_areas(desert, tmp_path) -> None:
    stats = tmp_path / "areas.csv"
    assert main(["stats", str(desert), "--out", str(stats)]) == 0
    areas = {r["id"]: r["area_km2"] for z in json.loads(stats.with_suffix(".json").read_text())["zones"]
             for r in z["classes"]}
    out = tmp_path / "dunes.gpkg"
    done = dunemap("vectorize", str(desert), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert pyogrio.read_info(out, layer="landforms")["crs"] == "EPSG:4326"
    meta, _, wkb, (ids, _, area_m2, zone) = pyogrio.raw.read(out, layer="landforms")
    assert list(meta["fields"]) == ["class_id", "class_name", "area_m2", "zone"]
    per_class = np.bincount(ids, weights=area_m2, minlength=4) / 1e6
    np.testing.assert_allclose(per_class, [areas[k] for k in range(4)], rtol=1e-6)
    polygons = shapely.from_wkb(wkb)
    west, south, east, north = shapely.total_bounds(polygons)
    assert 17.97 < west and east < 18.03 and -24.02 < south and north < -23.98  # degrees, not metres
    lon = shapely.get_x(shapely.point_on_surface(polygons))
    assert set(zone) == {"33S", "34S"} and (lon[zone == "33S"] < 18.0).all() and (lon[zone == "34S"] > 18.0).all()
    assert set(ids[zone == "33S"]) == {0, 1, 3} and set(ids[zone == "34S"]) == {0, 1, 2}


def test_a_point_by_the_zone_border_is_read_from_the_zone_that_owns_its_ground(desert) -> None:
    from dunemap.products.lookup import classes_at

    with rasterio.open(desert / "utm33S.tif") as src:  # 33S's mapped pixels nearest the border, as lon/lat
        classes = src.read(1)
        rows, cols = np.nonzero(classes != 255)
        x, y = src.transform @ (cols + 0.5, rows + 0.5)
        lon, lat = Transformer.from_crs(32733, 4326, always_xy=True).transform(x, y)
    edge = lon > 18.0 - 1.5 * 50 / 101_700  # within 1.5 pixels of 18°E
    lon, lat, want = lon[edge], lat[edge], classes[rows[edge], cols[edge]]
    maps = [desert / m for m in reversed(MAPS)]  # 34S first: the first map with data would be the wrong one
    with rasterio.open(maps[0]) as src:  # the other zone has data under some of them: its pixels there straddle 18°E
        x, y = Transformer.from_crs(4326, 32734, always_xy=True).transform(lon, lat)
        col, row = ~src.transform @ (x, y)
        assert (src.read(1)[np.floor(row).astype(int), np.floor(col).astype(int)] != 255).any()
    got, index = classes_at(maps, lon, lat, "EPSG:4326", Path("p.gpkg"), np.arange(lon.size))
    np.testing.assert_array_equal(got, want)
    assert (index == 1).all()
