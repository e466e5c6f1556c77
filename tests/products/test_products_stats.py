"""Area statistics against hand computations on UTM and geographic grids, zones, CSV/JSON and the CLI."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pyogrio.raw
import pyproj
import pytest
import shapely
from affine import Affine
from products_helpers import write_class_map

from dunemap.cli import main
from dunemap.products.stats import class_areas, map_statistics

WGS84_A = 6378137.0
WGS84_F = 1 / 298.257223563
WGS84_E2 = WGS84_F * (2 - WGS84_F)


def utm_pixel_area(easting: float, northing: float, zone_epsg: int, size: float = 10.0) -> float:
    """Hand computation: a UTM cell's true area is its grid area over the squared point scale factor k.

    k = k0 (1 + x^2 / 2R^2 + x^4 / 24R^4), x = (E - 500 km) / k0, R^2 = M N (radii of curvature).
    """
    lon, lat = pyproj.Transformer.from_crs(zone_epsg, 4326, always_xy=True).transform(easting, northing)
    s2 = math.sin(math.radians(lat)) ** 2
    n = WGS84_A / math.sqrt(1 - WGS84_E2 * s2)
    m = WGS84_A * (1 - WGS84_E2) / (1 - WGS84_E2 * s2) ** 1.5
    x = (easting - 500_000.0) / 0.9996
    r2 = m * n
    k = 0.9996 * (1 + x * x / (2 * r2) + x**4 / (24 * r2 * r2))
    return size * size / k**2


def ellipsoid_quadrangle_area(lat1: float, lat2: float, dlon: float) -> float:
    """Hand computation: exact area (m2) of a WGS84 quadrangle between two parallels, ``dlon`` degrees wide."""
    e = math.sqrt(WGS84_E2)

    def q(lat: float) -> float:
        s = math.sin(math.radians(lat))
        return s / (1 - WGS84_E2 * s * s) + math.log((1 + e * s) / (1 - e * s)) / (2 * e)

    return abs(math.radians(dlon) * WGS84_A**2 * (1 - WGS84_E2) / 2 * (q(lat2) - q(lat1)))


def test_utm_grid_areas_use_the_scale_factor_not_the_pixel_size(tmp_path: Path) -> None:
    classes = np.zeros((40, 50), dtype=np.uint8)
    classes[:10] = 1
    classes[10:12, :7] = 2
    classes[39, 49] = 255
    # a 500 m patch on the central meridian: k = 0.9996 exactly, so a 10 m pixel covers 100.08 m2, not 100
    path = write_class_map(tmp_path / "cm.tif", classes, "EPSG:32633", Affine(10, 0, 499_750, 0, -10, 3_300_000))
    stats = class_areas(path)
    by_class = {r.class_id: r for r in stats.rows}
    per_pixel = 100 / 0.9996**2
    assert by_class[1].pixels == 500 and by_class[2].pixels == 14 and by_class[3].pixels == 0
    assert by_class[1].area_km2 == pytest.approx(500 * per_pixel / 1e6, rel=1e-8)  # k grows by < 1e-9 within 250 m
    assert by_class[2].area_km2 == pytest.approx(14 * per_pixel / 1e6, rel=1e-8)
    assert sum(r.fraction for r in stats.rows) == pytest.approx(1.0)
    assert "Lambert azimuthal equal-area" in stats.method

    # 300 km east of the central meridian pixels shrink (k > 1)
    far = write_class_map(tmp_path / "far.tif", np.zeros((10, 10), np.uint8), "EPSG:32633",
                          Affine(10, 0, 800_000, 0, -10, 3_300_000))
    expected = utm_pixel_area(800_050, 3_299_950, 32633) * 100 / 1e6
    assert class_areas(far).rows[0].area_km2 == pytest.approx(expected, rel=1e-6)
    assert expected < 100 * 100 / 1e6


def test_geographic_grid_areas_shrink_with_latitude(tmp_path: Path) -> None:
    classes = np.zeros((100, 60), dtype=np.uint8)
    classes[:50] = 1  # the northern half
    path = write_class_map(tmp_path / "geo.tif", classes, "EPSG:4326", Affine(0.001, 0, 15.0, 0, -0.001, 30.1))
    stats = class_areas(path)
    north = ellipsoid_quadrangle_area(30.05, 30.1, 0.06) / 1e6
    south = ellipsoid_quadrangle_area(30.0, 30.05, 0.06) / 1e6
    by_class = {r.class_id: r for r in stats.rows}
    assert by_class[1].area_km2 == pytest.approx(north, rel=1e-9)
    assert by_class[0].area_km2 == pytest.approx(south, rel=1e-9)
    assert by_class[1].area_km2 < by_class[0].area_km2  # same pixel count, farther from the equator
    assert stats.method.startswith("geodesic rows")


def test_zones_are_reprojected_and_summarised(tmp_path: Path) -> None:
    classes = np.zeros((40, 40), dtype=np.uint8)
    classes[:, 20:] = 2
    transform = Affine(10, 0, 499_800, 0, -10, 3_300_000)
    path = write_class_map(tmp_path / "map.tif", classes, "EPSG:32633", transform)
    # zone "west": columns 0-9 (all class 0); zone "band": columns 15-24 (half 0, half 2); given in lon/lat
    to_geo = pyproj.Transformer.from_crs(32633, 4326, always_xy=True)

    def lonlat_box(c0: int, c1: int) -> shapely.Polygon:
        x0, x1 = 499_800 + 10 * c0, 499_800 + 10 * c1
        return shapely.transform(shapely.box(x0, 3_299_600, x1, 3_300_000), lambda xy: np.column_stack(
            to_geo.transform(xy[:, 0], xy[:, 1])))

    zones = tmp_path / "zones.gpkg"
    geoms = [shapely.segmentize(lonlat_box(0, 10), 1e-4), shapely.segmentize(lonlat_box(15, 25), 1e-4)]
    pyogrio.raw.write(zones, np.array(shapely.to_wkb(geoms), dtype=object), [np.array(["west", "band"], dtype=object)],
                      ["name"], layer="zones", driver="GPKG", geometry_type="Polygon", crs="EPSG:4326")
    stats = map_statistics(path, tmp_path / "stats.csv", zones=zones, zone_field="name")
    rows = {(r.zone, r.class_id): r for r in stats.rows}
    per_pixel = 100 / 0.9996**2 / 1e6
    assert rows[("west", 0)].pixels == 400 and rows[("west", 2)].pixels == 0
    assert rows[("band", 0)].pixels == 200 and rows[("band", 2)].pixels == 200
    assert rows[("band", 2)].area_km2 == pytest.approx(200 * per_pixel, rel=1e-6)
    assert rows[("band", 2)].fraction == pytest.approx(0.5)
    payload = json.loads(stats.json_path.read_text())
    assert [z["zone"] for z in payload["zones"]] == ["west", "band"]
    assert payload["zones"][0]["mapped_km2"] == pytest.approx(400 * per_pixel, rel=1e-6)


def test_cli_writes_csv_and_json(tmp_path: Path, capsys) -> None:
    classes = np.full((20, 20), 3, dtype=np.uint8)
    classes[:5] = 255
    path = write_class_map(tmp_path / "map.tif", classes, "EPSG:32633", Affine(10, 0, 499_900, 0, -10, 3_300_000))
    out = tmp_path / "out" / "stats.csv"
    assert main(["stats", str(path), "--out", str(out)]) == 0
    assert "star" in capsys.readouterr().out
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["class_name"] for r in rows] == ["interdune", "crescentic", "linear", "star"]
    assert int(rows[3]["pixels"]) == 300 and float(rows[3]["fraction"]) == 1.0
    assert float(rows[3]["area_km2"]) == pytest.approx(300 * 100 / 0.9996**2 / 1e6, rel=1e-5)
    assert json.loads(out.with_suffix(".json").read_text())["zones"][0]["zone"] == "all"

    assert main(["stats", str(path), "--out", str(out), "--zone-field", "name", "--overwrite"]) == 1
    assert "--zone-field 'name' given without --zones" in capsys.readouterr().err
