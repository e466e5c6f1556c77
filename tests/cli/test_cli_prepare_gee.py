"""``prepare`` on a small raster fills val and test by itself, names tiles once, reads the region tag;
``gee-script`` states the export size."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from safety_helpers import assert_one_line_error, run_cli

TRANSFORM = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 7_000_000.0)


def _write(path: Path, data: np.ndarray, tags: dict | None = None) -> Path:
    with rasterio.open(path, "w", driver="GTiff", height=data.shape[1], width=data.shape[2], count=data.shape[0],
                       dtype=data.dtype, crs="EPSG:32733", transform=TRANSFORM) as dst:
        dst.write(data)
        if tags:
            dst.update_tags(**tags)
    return path


def _scene(root: Path, size: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((2, size, size)).astype(np.float32)  # any band count: prepare keeps what it reads
    labels = np.kron(rng.integers(0, 10, (size // 64, size // 64)), np.ones((64, 64), int)).astype(np.uint8)[None]
    return (_write(root / "namib_0_emb.tif", emb, {"REGION": "erg_chebbi"}),
            _write(root / "namib_0_labels.tif", labels))


def test_small_raster_gets_val_and_test_tiles_names_once_region_from_tag(tmp_path: Path) -> None:
    image, labels = _scene(tmp_path, 1024)
    proc = run_cli("prepare", "--image", image, "--labels", labels, "--out", tmp_path / "data", "--tile", "256",
                   "--bands", "2")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "data" / "summary.json").read_text())
    assert all(summary["tiles"][s] > 0 for s in ("train", "val", "test")), summary["tiles"]
    assert summary["config"]["block_tiles"] in (1, 2, 3)
    assert "WARNING" not in proc.stderr
    with open(tmp_path / "data" / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["region"] for r in rows} == {"erg_chebbi"}  # the tag, not the file name
    names = [r["name"] for r in rows]
    assert all(n.startswith("erg_chebbi_namib_0_emb_") and n.count("namib_0_emb") == 1 for n in names), names[:3]


def test_too_few_tiles_is_one_line_saying_what_to_change(tmp_path: Path) -> None:
    image, labels = _scene(tmp_path, 256)
    proc = run_cli("prepare", "--image", image, "--labels", labels, "--out", tmp_path / "data", "--tile", "256",
                   "--bands", "2")
    assert proc.returncode == 1
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "cannot fill the train/val/test splits" in err[0] and "smaller --tile" in err[0]
    assert not (tmp_path / "data").exists()


def test_gee_script_states_size_and_warns_above_threshold() -> None:
    proc = run_cli("gee-script", "--region", "namib", "--year", "2023")
    assert proc.returncode == 0, proc.stderr
    header = [line for line in proc.stdout.splitlines() if "expected export" in line]
    assert header and "pixels x 64 float32 bands" in header[0] and "bytes" in header[0]
    pixels = int(header[0].split("= ")[1].split(" pixels")[0].replace(",", ""))
    assert 4e8 < pixels < 7e8  # the namib preset: ~1.4 deg x 3.4 deg at 10 m
    assert "WARNING" in proc.stderr and "GB" in proc.stderr and proc.stderr.count("\n") == 1
    proc = run_cli("gee-script", "--bbox", "14.5", "-24.1", "14.51", "-24.09", "--year", "2023", "--warn-gb", "1")
    assert proc.returncode == 0 and "WARNING" not in proc.stderr and "expected export" in proc.stdout


def _export_pixels(proc) -> int:
    header = [line for line in proc.stdout.splitlines() if "expected export" in line]
    return int(header[0].split("= ")[1].split(" pixels")[0].replace(",", ""))


def test_gee_script_geographic_crs_counts_metre_pixels_and_warns() -> None:
    utm = run_cli("gee-script", "--region", "namib", "--year", "2023")
    wgs84 = run_cli("gee-script", "--region", "namib", "--year", "2023", "--crs", "EPSG:4326")
    assert utm.returncode == 0 and wgs84.returncode == 0, wgs84.stderr
    # 10 m pixels in degrees (10 m of the equator's arc) cover the same area as the UTM export, give or take
    # the shrinking of a degree of longitude at 24 S
    assert 0.9 < _export_pixels(wgs84) / _export_pixels(utm) < 1.2
    assert "WARNING" in wgs84.stderr and "GB" in wgs84.stderr


def test_gee_script_refuses_unpublished_years_and_unknown_crs_in_one_line() -> None:
    assert_one_line_error(run_cli("gee-script", "--region", "namib", "--year", "2099"),
                          r"year 2099 has no AEF annual embedding yet.*expected 2017 to \d{4}")
    assert_one_line_error(run_cli("gee-script", "--region", "namib", "--year", "2016"), r"year 2016 predates")
    assert_one_line_error(run_cli("gee-script", "--region", "namib", "--year", "2023", "--crs", "EPSG:999999"),
                          r"crs 'EPSG:999999' is not a known EPSG code")
