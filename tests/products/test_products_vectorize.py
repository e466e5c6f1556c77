"""Vectorising a class map: one polygon per patch, seams dissolved, true areas, minimum area, CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import rasterio
import shapely
from affine import Affine
from products_helpers import write_class_map

from dunemap.cli import main
from dunemap.products.vectorize import trace_patches, vectorize_map

CM = Affine(10, 0, 499_500, 0, -10, 3_300_000)  # on the UTM central meridian: true area = grid area / 0.9996^2


def _classes() -> np.ndarray:
    c = np.zeros((100, 100), dtype=np.uint8)
    c[10:30, 10:50] = 1  # 800 px
    c[60:70, :] = 2  # a full-width band: 1000 px
    c[80:90, 80:90] = 1  # 100 px
    c[85, 85] = 3  # a 1-px hole of another class inside it
    c[0, 0] = 255
    return c


def _read(path: Path) -> list[tuple[int, str, float, shapely.Geometry]]:
    _, _, wkb, (ids, names, areas) = pyogrio.raw.read(path, layer="landforms")  # the GeoPackage also holds layer_styles
    return sorted(zip(ids.tolist(), names.tolist(), areas.tolist(), shapely.from_wkb(wkb)), key=lambda r: (r[0], -r[2]))


def test_patches_have_true_areas_and_holes(tmp_path: Path) -> None:
    path = write_class_map(tmp_path / "map.tif", _classes(), "EPSG:32633", CM)
    result = vectorize_map(path, tmp_path / "dunes.gpkg", classes=[1, 2, 3])
    rows = _read(result.path)
    assert [(r[0], r[1]) for r in rows] == [(1, "crescentic"), (1, "crescentic"), (2, "linear"), (3, "star")]
    scale = 1 / 0.9996**2
    expected_px = [800, 99, 1000, 1]
    for (_, _, area, geom), px in zip(rows, expected_px):
        assert geom.is_valid and geom.geom_type == "Polygon"
        assert geom.area == pytest.approx(px * 100)  # grid (UTM) area
        assert area == pytest.approx(px * 100 * scale, rel=1e-6)  # true area
    assert len(rows[1][3].interiors) == 1  # the star pixel is a hole in the small crescentic patch
    x0, y0, x1, y1 = rows[2][3].bounds
    assert (x0, x1, y1 - y0) == (499_500, 500_500, 100)
    with rasterio.open(path) as src:
        assert pyogrio.read_info(result.path, layer="landforms")["crs"] == f"EPSG:{src.crs.to_epsg()}"
    assert result.per_class == {"crescentic": 2, "linear": 1, "star": 1}


def test_block_seams_are_dissolved(tmp_path: Path) -> None:
    path = write_class_map(tmp_path / "map.tif", _classes(), "EPSG:32633", CM)
    with rasterio.open(path) as src:
        small = trace_patches(src, [1, 2], block=16)
        whole = trace_patches(src, [1, 2], block=4096)
    assert len(small) == len(whole) == 3
    for (va, a), (vb, b) in zip(small, whole):
        assert va == vb and a.equals(b)


def test_min_area_drops_small_patches(tmp_path: Path) -> None:
    path = write_class_map(tmp_path / "map.tif", _classes(), "EPSG:32633", CM)
    result = vectorize_map(path, tmp_path / "big.gpkg", min_area_m2=20_000)
    rows = _read(result.path)
    assert all(area >= 20_000 for _, _, area, _ in rows)
    assert {r[0] for r in rows} == {0, 1, 2}
    assert result.dropped_small == 2  # the 99-px crescentic patch and the 1-px star


def test_geographic_map_areas_are_geodesic(tmp_path: Path) -> None:
    classes = np.zeros((50, 50), dtype=np.uint8)
    classes[:10, :10] = 1
    path = write_class_map(tmp_path / "geo.tif", classes, "EPSG:4326", Affine(0.0001, 0, 15, 0, -0.0001, -24))
    rows = _read(vectorize_map(path, tmp_path / "geo.gpkg", classes=[1]).path)
    assert len(rows) == 1
    # about 111 m x 101.7 m at 24 degrees south
    expected = 0.001 * 110_770 * 0.001 * 111_320 * math.cos(math.radians(24.0005))
    assert rows[0][2] == pytest.approx(expected, rel=5e-3)


def test_cli_vectorize_and_errors(tmp_path: Path, capsys) -> None:
    path = write_class_map(tmp_path / "map.tif", _classes(), "EPSG:32633", CM)
    out = tmp_path / "dunes.gpkg"
    assert main(["vectorize", str(path), "--out", str(out), "--min-area", "10000", "--classes", "1,2"]) == 0
    assert "wrote 2 polygons" in capsys.readouterr().out
    assert [r[0] for r in _read(out)] == [1, 2]
    assert main(["vectorize", str(path), "--out", str(tmp_path / "x.gpkg"), "--classes", "255"]) == 1
    assert "class ids must be in 0..254" in capsys.readouterr().err
    assert not (tmp_path / "x.gpkg").exists()
