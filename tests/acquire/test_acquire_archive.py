"""``dunemap map --index``: a desert mapped straight from an AEF-format archive (int8 COGs stored bottom-up, two UTM
zones, a GeoParquet index) on disk and behind a loopback HTTP range server, killed and resumed, with a flaky server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from aef_archive_helpers import RES, index_row, serve, write_int8_cog
from process_helpers import kill_when_predicted
from pyproj import Geod, Transformer

from dunemap import map_statistics
from dunemap.cli import main
from dunemap.io.aef import quantize
from dunemap.raster.geometry import Box
from dunemap.raster.zones import ZoneView, owner_epsg, utm_epsg

REPO = Path(__file__).resolve().parents[2]
SIZE = 256  # tile side in pixels (the public tiles are 8192)
BANDS = 64
YEAR = 2023
LAT = -24.0  # the 33S / 34S zone boundary is the 18°E meridian


def _xy(epsg: int, lon: float, lat: float) -> tuple[float, float]:
    x, y = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True).transform(lon, lat)
    return round(x / RES) * RES, round(y / RES) * RES


E33, Y33 = _xy(32733, 18.0, LAT)
E34, Y34 = _xy(32734, 18.0, LAT)
# zone 33S: 2 x 2 tiles reaching 1.28 km past 18°E; zone 34S: 1 x 2 tiles reaching 1.28 km west of it (overlap)
TILES = [(32733, E33 - 3840 + 2560 * i, Y33 - 2560 + 2560 * j) for i in range(2) for j in range(2)] + \
        [(32734, E34 - 1280, Y34 - 2560 + 2560 * j) for j in range(2)]
TO_WGS33 = Transformer.from_crs("EPSG:32733", "EPSG:4326", always_xy=True)
TO_WGS34 = Transformer.from_crs("EPSG:32734", "EPSG:4326", always_xy=True)
BBOX = (TO_WGS33.transform(E33 - 1600, Y33)[0], TO_WGS33.transform(E33, Y33 - 1200)[1],
        TO_WGS34.transform(E34 + 500, Y34)[0], TO_WGS33.transform(E33, Y33 + 1200)[1])
OPTIONS = ["--window", "128", "--stride", "64", "--block-size", "128", "--context", "64", "--precision", "fp32",
           "--threads", "1", "--no-progress"]


def zone_vector(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=BANDS).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture(scope="module")
def archive(tmp_path_factory, local_checkpoint):
    """Six int8 tiles, each zone one embedding vector whose class the model tells apart; yields (folder, classes)."""
    import dunemap

    predictor = dunemap.load_predictor(local_checkpoint, precision="fp32")
    seeds, classes = [], []
    for seed in range(50):  # two vectors the model gives different classes on uniform ground
        q = quantize(np.repeat(zone_vector(seed)[:, None, None], 96, axis=1).repeat(96, axis=2))
        k = int(dunemap.predict_array(predictor, q, window=64, stride=32).classes[48, 48])
        if k not in classes:
            seeds.append(seed)
            classes.append(k)
        if len(seeds) == 2:
            break
    root = tmp_path_factory.mktemp("aef")
    rows = []
    for n, (epsg, x0, y0) in enumerate(TILES):
        vec = zone_vector(seeds[epsg == 32734])
        q = quantize(np.broadcast_to(vec[:, None, None], (BANDS, SIZE, SIZE)))
        rel = f"{YEAR}/{epsg % 100}S/t{n}.tiff"
        write_int8_cog(root / rel, q, epsg, x0, y0)
        rows.append(index_row(rel, epsg, x0, y0, YEAR, SIZE))
    pd.DataFrame(rows).to_parquet(root / "aef_index.parquet")
    return root, {32733: classes[0], 32734: classes[1]}


def run_map(index: str, out: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "dunemap", "map", "--index", index, "--bbox", *map(str, BBOX), "--year",
               str(YEAR), "--out", str(out), *OPTIONS, *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, check=False)


def child_env(**extra: str) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1", **extra}


def truth_km2(west: float, east: float) -> float:
    """Ellipsoidal area of the lon/lat box ``west..east`` x the bbox's latitudes, parallels densified."""
    lons = np.linspace(west, east, 200)
    lon = np.concatenate([lons, lons[::-1]])
    lat = np.concatenate([np.full(200, BBOX[1]), np.full(200, BBOX[3])])
    return abs(Geod(ellps="WGS84").polygon_area_perimeter(lon, lat)[0]) / 1e6


@pytest.fixture(scope="module")
def mapped(archive, local_checkpoint, tmp_path_factory):
    """The set mapped from disk: (folder, archive folder, zone classes)."""
    root, classes = archive
    out = tmp_path_factory.mktemp("maps") / "desert"
    done = run_map(str(root / "aef_index.parquet"), out, "--weights", str(local_checkpoint), env=child_env())
    assert done.returncode == 0, done.stderr
    return out, root, classes


def test_zone_rule_is_the_nearest_central_meridian():
    assert utm_epsg(17.999, -24) == 32733 and utm_epsg(18.0, -24) == 32734 and utm_epsg(18.0, 1) == 32634
    assert list(owner_epsg(np.array([17.999, 18.0, 20.9]), np.array([-1.0, -1.0, 0.0]))) == [32733, 32734, 32634]
    meridians = -183.0 + 6.0 * np.arange(1, 61)
    for lon in np.linspace(-179.9, 179.9, 97) + 0.01:  # nearest central meridian == the zone's own (off the edges)
        assert utm_epsg(lon, 5.0) - 32600 == int(np.argmin(np.abs(meridians - lon))) + 1
    view = ZoneView(32733, BBOX, (E33 - 3000, Y33 - 1900, E33 + 10, Y33 + 1900))
    transform = rasterio.Affine(RES, 0, E33 - 100, 0, -RES, Y33 + 50)
    owned = view.owned(transform, Box(0, 0, 10, 20))
    assert owned[:, :9].all() and not owned[:, 11:].any()  # 18°E crosses this box near x = E33


def test_map_from_disk_is_one_map_per_zone_with_true_areas(mapped):
    out, _, classes = mapped
    record = json.loads((out / "catalog.json").read_text())
    assert [m["zone"] for m in record["maps"]] == ["33S", "34S"]
    assert [m["status"] for m in record["maps"]] == ["mapped", "mapped"] and record["year"] == YEAR
    assert record["maps"][0]["tile_paths"] == [f"{YEAR}/33S/t{n}.tiff" for n in range(4)]
    assert "central meridian" in record["ownership"]
    assert (out / "catalog.csv").read_text().splitlines()[0] == "zone,epsg,map,tiles,status,error"
    for epsg, name in ((32733, "utm33S.tif"), (32734, "utm34S.tif")):
        with rasterio.open(out / name) as ds:
            assert ds.crs.to_epsg() == epsg and ds.transform.e < 0  # its own CRS, north up
            data = ds.read(1)
        assert set(np.unique(data)) == {classes[epsg], 255}  # nodata outside its own ground
    totals = zone_totals(out)
    want = {classes[32733]: truth_km2(BBOX[0], 18.0), classes[32734]: truth_km2(18.0, BBOX[2])}
    for k, km2 in want.items():
        assert totals[k] == pytest.approx(km2, rel=1e-3), (k, totals, want)
    assert sum(v for k, v in totals.items() if k not in want) == 0


def zone_totals(out: Path) -> dict[int, float]:
    """km² per class added up over the zone maps, each measured alone."""
    totals: dict[int, float] = {}
    for name in ("utm33S.tif", "utm34S.tif"):
        for row in map_statistics(out / name).itertuples():
            totals[row.class_id] = totals.get(row.class_id, 0.0) + row.area_km2
    return totals


def test_stats_of_the_set_sum_the_zones_each_in_its_projection(mapped, tmp_path, capsys):
    out, _, classes = mapped
    totals = zone_totals(out)
    for given in ([str(out)], [str(out / "catalog.json")], [str(out / "utm33S.tif"), str(out / "utm34S.tif")]):
        report = tmp_path / f"areas{len(list(tmp_path.iterdir()))}.csv"
        assert main(["stats", *given, "--out", str(report)]) == 0, capsys.readouterr().err
        table = pd.read_csv(report)
        got = dict(zip(table["class_id"], table["area_km2"]))
        for k in classes.values():
            assert got[k] == pytest.approx(totals[k], rel=1e-6)
        assert table["fraction"].sum() == pytest.approx(1.0)
        record = json.loads(report.with_suffix(".json").read_text())
        assert [Path(m).name for m in record["maps"]] == ["utm33S.tif", "utm34S.tif"]
    assert main(["stats", str(out), "--overwrite"]) == 0 and (out.parent / "desert_areas.csv").is_file()
    assert main(["stats", str(tmp_path)]) == 1
    assert "without catalog.json" in capsys.readouterr().err


def test_map_over_a_flaky_http_server_is_byte_identical(mapped, local_checkpoint, tmp_path):
    out, root, _ = mapped
    with serve(root, fail_every=3) as (base, served):  # every third GET answered 503
        done = run_map(f"{base}/aef_index.parquet", tmp_path / "http", "--weights", str(local_checkpoint),
                       env=child_env(GDAL_HTTP_RETRY_DELAY="0.05"))
    assert done.returncode == 0, done.stderr
    for product in ("utm33S.tif", "utm34S.tif", "catalog.csv"):
        assert (tmp_path / "http" / product).read_bytes() == (out / product).read_bytes(), product
    assert served["_failed"] > 0 and 206 in served["_status"]  # survived failures; range reads
    assert all(served.get(f"t{n}.tiff", 0) > 0 for n in range(6))  # every tile read where it lies


def test_dask_workers_map_the_set_byte_identical(mapped, local_checkpoint, tmp_path):
    """The zones' blocks run as tasks on a local Dask cluster of worker processes: the same maps."""
    out, root, _ = mapped
    done = run_map(str(root / "aef_index.parquet"), tmp_path / "dask", "--weights", str(local_checkpoint),
                   "--workers", "2", "--verbose", env=child_env())
    assert done.returncode == 0, done.stderr
    assert "2 worker(s)" in done.stderr and "model on the workers" in done.stderr
    assert done.stderr.count("Dask scheduler") == 1  # one cluster for both zones
    for product in ("utm33S.tif", "utm34S.tif", "catalog.csv"):
        assert (tmp_path / "dask" / product).read_bytes() == (out / product).read_bytes(), product


def test_auto_measures_the_backends_once_for_the_whole_set(archive, local_checkpoint, tmp_path):
    """One backend choice for every zone: the first zone mapped measures the backends, the second reuses its choice
    (measuring again could pick another backend for it) and both maps record the same measured choice."""
    pytest.importorskip("onnxruntime")
    root, _ = archive
    out = tmp_path / "auto"
    done = run_map(str(root / "aef_index.parquet"), out, "--weights", str(local_checkpoint), "--backend", "auto",
                   "--window", "32", "--stride", "16", "--verbose", env=child_env(DUNEMAP_CACHE=str(tmp_path)))
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("backend auto: chose") == 1, done.stderr
    assert done.stderr.count("reuses the choice measured earlier in this run") == 1, done.stderr
    tags = []
    for zone in ("utm33S.tif", "utm34S.tif"):
        with rasterio.open(out / zone) as src:
            tags.append({k: v for k, v in src.tags().items() if k.startswith("BACKEND")})
    assert tags[0] == tags[1] and "BACKEND_AGREEMENT" in tags[0] and "BACKEND_SECONDS_PER_WINDOW" in tags[0]
    backends = [m["backend"] for m in json.loads((out / "catalog.json").read_text())["maps"]]
    assert backends[0] == backends[1] == tags[0]


def test_killed_run_resumes_to_the_same_bytes(mapped, local_checkpoint, tmp_path):
    out, root, _ = mapped
    target = tmp_path / "killed"
    command = [sys.executable, "-m", "dunemap", "map", "--index", str(root / "aef_index.parquet"), "--bbox",
               *map(str, BBOX), "--year", str(YEAR), "--out", str(target), "--weights", str(local_checkpoint),
               *OPTIONS]
    kill_when_predicted(command, target / "utm33S.tif.partial" / "journal.json", 2, child_env(), deadline_s=120)
    assert not (target / "catalog.json").exists() and not (target / "utm33S.tif").exists()
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=child_env(), check=False)
    assert done.returncode == 0, done.stderr
    assert "resumed)" in done.stdout and "(0 resumed)" not in done.stdout.splitlines()[0]
    for product in ("utm33S.tif", "utm34S.tif"):
        assert (target / product).read_bytes() == (out / product).read_bytes()


def test_unreadable_tile_is_named_and_the_other_zone_is_mapped(archive, local_checkpoint, tmp_path, capsys,
                                                               monkeypatch):
    root, _ = archive
    index = pd.read_parquet(root / "aef_index.parquet")
    index.loc[index["path"] == f"{YEAR}/34S/t5.tiff", "path"] = f"{YEAR}/34S/gone.tiff"
    index.to_parquet(root / "broken.parquet")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "1")
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.05")
    out = tmp_path / "d"
    with serve(root) as (base, _):
        args = ["map", "--index", f"{base}/broken.parquet", "--bbox", *map(str, BBOX), "--year", str(YEAR), "--out",
                str(out), "--weights", str(local_checkpoint), *OPTIONS]
        assert main(args) == 1
        err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
        assert len(err) == 1 and "gone.tiff" in err[0] and "404" in err[0], err
        assert (out / "utm33S.tif").exists() and not (out / "utm34S.tif").exists()
        assert not (out / "catalog.json").exists()
        assert main([*args, "--allowed-tile-failures", "1"]) == 0  # the finished zone is kept, not mapped again
    stdout = capsys.readouterr().out
    assert "zone 34S unfinished" in stdout and "gone.tiff" in stdout and "kept" in stdout
    record = json.loads((out / "catalog.json").read_text())
    assert [(m["zone"], m["status"]) for m in record["maps"]] == [("33S", "mapped"), ("34S", "unfinished")]


def test_bad_archive_input_is_one_line(archive, local_checkpoint, tmp_path, capsys):
    root, _ = archive
    base = ["map", "--weights", str(local_checkpoint), "--out", str(tmp_path / "x"), "--no-progress"]
    area = ["--bbox", *map(str, BBOX)]
    pd.DataFrame({"path": ["a.tiff"], "year": [YEAR]}).to_parquet(tmp_path / "thin.parquet")
    index = pd.read_parquet(root / "aef_index.parquet")
    shifted = index.copy()  # a zone-33 tile moved off its zone's pixel grid by 3 m
    write_int8_cog(root / "off/t.tiff", quantize(np.ones((BANDS, SIZE, SIZE), np.float32) / 8), 32733,
                   TILES[0][1] + 3, TILES[0][2])
    shifted.loc[0, "path"] = "off/t.tiff"
    shifted.to_parquet(root / "shifted.parquet")
    cases = [
        (["--index", str(root / "aef_index.parquet"), "--bbox", "100", "10", "101", "11", "--year", str(YEAR)],
         "no AEF tiles of year 2023 intersect bbox"),
        (["--index", str(tmp_path / "thin.parquet"), *area, "--year", str(YEAR)], "missing column(s) crs"),
        (["--index", str(root / "aef_index.parquet"), *area, "--year", "2024"], "years in the index: 2023"),
        (["--index", str(root / "aef_index.parquet"), *area, "--year", "2012"], "predates the AEF"),
        (["--index", str(root / "shifted.parquet"), *area, "--year", str(YEAR)], "not on the first tile's pixel grid"),
        (["--index", str(root / "aef_index.parquet"), *area], "--index needs --year"),
        (["in.tif", "--index", str(root / "aef_index.parquet"), *area, "--year", str(YEAR)], "give no INPUT"),
    ]
    for args, message in cases:
        assert main(base + args) == 1, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (args, err)
    assert not (tmp_path / "x" / "catalog.json").exists()


def test_mosaic_of_the_set_is_one_class_cog_in_one_crs(mapped, tmp_path, capsys):
    out, _, classes = mapped
    totals = zone_totals(out)
    for crs, name in (("EPSG:4326", "geo.tif"), ("EPSG:32733", "utm.tif")):
        assert main(["mosaic", str(out), "--out", str(tmp_path / name), "--crs", crs]) == 0, capsys.readouterr().err
        with rasterio.open(tmp_path / name) as ds:
            assert ds.crs == rasterio.crs.CRS.from_user_input(crs) and ds.nodata == 255 and ds.colormap(1)
            assert ds.overviews(1) or max(ds.shape) <= 512
            data = ds.read(1)
        assert set(np.unique(data)) == {*classes.values(), 255}
        got = {int(r.class_id): r.area_km2 for r in map_statistics(tmp_path / name).itertuples()}
        for k in classes.values():  # nearest neighbour moves edges by at most half a pixel
            assert got[k] == pytest.approx(totals[k], rel=0.02), (crs, k, got, totals)
    assert (tmp_path / "utm.qml").is_file() and (tmp_path / "utm.tif.aux.xml").is_file()
    assert main(["mosaic", str(out), "--out", str(tmp_path / "utm.tif")]) == 1
    assert "already exists" in capsys.readouterr().err


def test_quicklook_of_the_set_is_one_equal_area_picture(mapped, capsys):
    out, _, _ = mapped
    png = out.parent / "desert.png"
    assert main(["quicklook", str(out), "--max-size", "200", "--dpi", "50"]) == 0, capsys.readouterr().err
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".desert")]  # its mosaic was temporary
    assert main(["quicklook", str(out), "--hatch-outside", "--overwrite"]) == 1
    assert "give one MAP" in capsys.readouterr().err
