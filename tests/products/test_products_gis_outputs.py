"""GIS outputs on real files through the real CLI: formats from the extension, legends GIS tools read,
provenance and STAC, north-up quicklooks, and mosaics of bottom-up AEF tiles."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import rasterio.warp
import torch
from affine import Affine
from gis_helpers import ORIGIN, aef_codes, cli, tiny_checkpoint, write_aef
from products_helpers import LEGEND, write_class_map

from dunemap.cli import main
from dunemap.io.checksum import file_sha256
from dunemap.io.formats import VECTOR_DRIVERS
from dunemap.knowledge.catalog import load_catalog
from dunemap.raster.legend import style_paths
from dunemap.runtime import resolve_precision

UTM = "EPSG:32633"
MAP_ARGS = ("--window", "64", "--stride", "32", "--no-progress")


@pytest.fixture(scope="module")
def mapped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One real ``dunemap map --stac --confidence`` run on a 96x80 AEF raster, shared by the tests below."""
    root = tmp_path_factory.mktemp("mapped")
    weights = tiny_checkpoint(root / "tiny.pth")
    image = write_aef(root / "aef.tif", aef_codes(96, 80))
    with rasterio.open(image, "r+") as dst:
        dst.update_tags(aef_year="2021")  # as fetch-aef records the embedding's year
    out = root / "map.tif"
    run = cli("map", image, "--weights", weights, "--out", out, "--confidence", "uint8", "--stac", *MAP_ARGS)
    assert run.returncode == 0, run.stderr
    return {"weights": weights, "image": image, "map": out, "root": root, "run": run}


def _categories(aux: Path) -> tuple[list[str], list[list[str]]]:
    band = ET.parse(aux).getroot().find("PAMRasterBand")
    names = [c.text for c in band.find("CategoryNames")]
    rat = band.find("GDALRasterAttributeTable")
    fields = [f.find("Name").text for f in rat.findall("FieldDefn")]
    return names, [fields] + [[f.text for f in row.findall("F")] for row in rat.findall("Row")]


def test_class_map_has_categories_rat_qml_and_provenance(mapped) -> None:
    out = mapped["map"]
    styles = style_paths(out)
    assert styles["aux"].name == "map.tif.aux.xml" and styles["qml"].name == "map.qml"
    names, rat = _categories(styles["aux"])
    with rasterio.open(out) as src:
        tags, cmap = src.tags(), src.colormap(1)
    assert names == json.loads(tags["CLASS_NAMES"]) and names[0] == "interdune"
    assert rat[0] == ["Value", "Name", "Red", "Green", "Blue"]
    for i, row in enumerate(rat[1:]):  # the RAT agrees with the colour table GDAL reads from the file itself
        assert row == [str(i), names[i], *map(str, cmap[i][:3])]
    qml = ET.parse(styles["qml"]).getroot()
    entries = qml.findall(".//rasterrenderer[@type='paletted']/colorPalette/paletteEntry")
    labels = load_catalog().labels  # the legend a person reads: "Crescentic (barchan)", not "crescentic"
    assert [(e.get("value"), e.get("label")) for e in entries] == [(str(i), n) for i, n in enumerate(labels)]
    assert names == load_catalog().names and json.loads(tags["CLASS_LABELS"]) == labels
    with rasterio.open(out) as src:  # no "class: 0=interdune, 1=..." line in QGIS's legend
        assert src.descriptions == ("dune class",)
    assert tags["MODEL"] == "mit_tiny" and tags["CHECKPOINT_SHA256"] == file_sha256(mapped["weights"])
    # --precision auto: bf16 where this CPU has native bf16, fp32 elsewhere
    assert tags["PRECISION"] == resolve_precision("auto", torch.device("cpu"))
    assert (tags["WINDOW"], tags["STRIDE"]) == ("64", "32")
    assert tags["DUNEMAP_VERSION"] and tags["BLEND"]
    with rasterio.open(out.with_name("map_confidence.tif")) as src:
        assert src.tags()["CHECKPOINT_SHA256"] == tags["CHECKPOINT_SHA256"]
    if shutil.which("gdalinfo"):
        info = subprocess.run(["gdalinfo", str(out)], capture_output=True, text=True, check=True).stdout
        assert "Categories:" in info and "interdune" in info


def test_map_says_each_thing_once_and_no_library_chatter(mapped) -> None:
    run, out = mapped["run"], mapped["map"]
    said = run.stdout + run.stderr
    for path in (out, out.with_name("map_confidence.tif"), out.with_suffix(".json")):
        assert said.count(f"wrote {path}") == 1, said  # the summary says it; no log line repeats it
    foreign = [line for line in run.stderr.splitlines() if line.startswith("INFO ") and not line.startswith("INFO dunemap")]
    assert not foreign, foreign  # GDAL, pyogrio and friends speak only when something is wrong


def test_stac_item_describes_map_and_companions(mapped) -> None:
    import pystac

    path = mapped["map"].with_suffix(".json")
    item = pystac.Item.from_file(str(path))
    assert item.id == "map" and set(item.assets) >= {"classes", "confidence", "style_qml", "style_aux"}
    for asset in item.assets.values():
        assert (path.parent / asset.href).is_file()
    d = item.to_dict()
    assert d["properties"]["proj:code"] == UTM and d["properties"]["proj:shape"] == [96, 80]
    assert d["properties"]["dunemap:checkpoint_sha256"] == file_sha256(mapped["weights"])
    lon0, lat0, lon1, lat1 = item.bbox
    assert 14.9 < lon0 < lon1 < 15.1 and 66 < lat0 < lat1 < 67  # the 800 m x 960 m footprint near 15 E, 66.7 N
    classes = d["assets"]["classes"]["classification:classes"]
    catalog = load_catalog()
    assert classes[0]["value"] == 0 and classes[-1]["nodata"] is True
    assert [(c["name"], c["title"]) for c in classes[:-1]] == list(zip(catalog.names, catalog.labels))
    assert classes[1]["description"] == " ".join(catalog.descriptions[1].split())
    # the Item's time is the embedding's year (the aef_year tag of the input), not when the map was made
    assert d["properties"]["datetime"] is None
    assert (d["properties"]["start_datetime"], d["properties"]["end_datetime"]) == (
        "2021-01-01T00:00:00Z", "2021-12-31T23:59:59Z")
    derived = [link for link in d["links"] if link["rel"] == "derived_from"]
    assert len(derived) == 1 and (path.parent / derived[0]["href"]).resolve() == mapped["image"].resolve()
    assert d["assets"]["classes"]["raster:bands"][0]["nodata"] == 255
    # (pystac's Item.validate would download the extensions' JSON schemas: no network here, so the fields are checked)
    assert set(d["stac_extensions"]) == {f"https://stac-extensions.github.io/{e}/schema.json" for e in (
        "projection/v2.0.0", "raster/v1.1.0", "classification/v2.0.0")}
    again = cli("map", mapped["image"], "--weights", mapped["weights"], "--out", mapped["map"], "--stac", *MAP_ARGS)
    assert again.returncode == 1 and "map.json: already exists" in again.stderr


@pytest.mark.parametrize("ext", sorted(VECTOR_DRIVERS))
def test_vectorize_writes_the_format_of_the_extension(mapped, tmp_path: Path, ext: str) -> None:
    out = tmp_path / f"dunes{ext}"
    run = cli("vectorize", mapped["map"], "--out", out)
    assert run.returncode == 0, run.stderr
    if ext == ".parquet":  # GeoParquet: read back with pyarrow (pyogrio's bundled GDAL has no Parquet driver)
        import pyarrow.parquet as pq

        table = pq.read_table(out)
        geo = json.loads(table.schema.metadata[b"geo"])
        assert geo["primary_column"] == "geometry" and geo["columns"]["geometry"]["crs"]["id"]["code"] == 32633
        assert table.num_rows > 0 and set(table.column("class_name").to_pylist()) <= set(legend_names(mapped))
        return
    info = pyogrio.read_info(out, layer="landforms" if ext == ".gpkg" else None)
    assert info["driver"] == VECTOR_DRIVERS[ext] and info["features"] > 0
    if ext == ".geojson":  # RFC 7946: WGS 84 lon/lat, no "crs" member
        doc = json.loads(out.read_text())
        assert "crs" not in doc and info["crs"] == "EPSG:4326"
        lon, lat = np.array([xy for f in doc["features"] for ring in f["geometry"]["coordinates"]
                             for xy in ring]).T
        assert (14.9 < lon).all() and (lon < 15.1).all() and (66 < lat).all() and (lat < 67).all()
    else:
        assert info["crs"] == UTM
    if ext == ".shp":
        assert {p.suffix for p in tmp_path.iterdir()} == {".shp", ".shx", ".dbf", ".prj", ".cpg"}
    if ext == ".gpkg":
        with sqlite3.connect(out) as db:
            (table, default, qml), = db.execute("SELECT f_table_name, useAsDefault, styleQML FROM layer_styles")
        assert table == "landforms" and default == 1
        labels = [c.get("label") for c in ET.fromstring(qml.split("\n", 1)[1]).iter("category")]
        assert labels == load_catalog().labels
    if shutil.which("ogrinfo"):
        subprocess.run(["ogrinfo", "-ro", "-so", "-al", str(out)], check=True, capture_output=True)


def legend_names(mapped) -> list[str]:
    with rasterio.open(mapped["map"]) as src:
        return json.loads(src.tags()["CLASS_NAMES"])


def _in_process(capsys, *args: str | Path) -> tuple[int, str]:
    """``dunemap ARGS`` through the CLI's ``main`` in this process: its exit code and what it wrote to stderr (for
    the runs that follow a real process of the same command)."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def test_shapefile_set_needs_overwrite_and_is_replaced_whole(mapped, tmp_path: Path, capsys) -> None:
    out = tmp_path / "dunes.shp"
    assert cli("vectorize", mapped["map"], "--out", out).returncode == 0
    (tmp_path / "dunes.dbf").write_bytes(b"stale")  # a damaged sidecar: --overwrite must replace the whole set
    code, err = _in_process(capsys, "vectorize", mapped["map"], "--out", out)
    assert code == 1 and "already exists; pass --overwrite" in err
    assert _in_process(capsys, "vectorize", mapped["map"], "--out", out, "--overwrite")[0] == 0
    assert pyogrio.read_info(out)["features"] > 0
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_unknown_extensions_are_refused_before_anything_is_written(mapped, tmp_path: Path, capsys) -> None:
    runs = {  # in this process: each command runs as a real process in the tests around
        "vectorize": _in_process(capsys, "vectorize", mapped["map"], "--out", tmp_path / "dunes.kml"),
        "sample": _in_process(capsys, "sample", mapped["map"], "--out", tmp_path / "points.csv", "--n", "10"),
        "map": _in_process(capsys, "map", mapped["image"], "--weights", mapped["weights"], "--out", tmp_path / "x.png",
                           *MAP_ARGS),
    }
    for command, (code, err) in runs.items():
        assert code == 1, command
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "supported:" in lines[0] and "Traceback" not in err, (command, err)
    assert "'.png'" in runs["map"][1] and ".tif (GTiff)" in runs["map"][1]
    assert ".gpkg (GPKG)" in runs["vectorize"][1] and ".shp (ESRI Shapefile)" in runs["vectorize"][1]
    assert list(tmp_path.iterdir()) == []


def test_sample_writes_geojson(mapped, tmp_path: Path) -> None:
    out = tmp_path / "points.geojson"
    run = cli("sample", mapped["map"], "--out", out, "--n", "40", "--min-per-class", "2")
    assert run.returncode == 0, run.stderr
    info = pyogrio.read_info(out)
    assert info["driver"] == "GeoJSON" and info["features"] == 40 and "ref_class" in list(info["fields"])
    doc = json.loads(out.read_text())  # RFC 7946: lon/lat in WGS 84, no legacy "crs" member
    assert "crs" not in doc and info["crs"] == "EPSG:4326"
    lon, lat = np.array([f["geometry"]["coordinates"] for f in doc["features"]]).T
    assert (14.9 < lon).all() and (lon < 15.1).all() and (66 < lat).all() and (lat < 67).all()
    # labelled in lon/lat, the points still fall on the pixels they were drawn from: accuracy reads the map there
    with rasterio.open(mapped["map"]) as src:
        truth = [int(v[0]) for v in src.sample(zip(*rasterio.warp.transform("EPSG:4326", src.crs, lon, lat)))]
    for feature, value in zip(doc["features"], truth):
        feature["properties"]["ref_class"] = str(value)
    out.write_text(json.dumps(doc))
    report = tmp_path / "acc.json"
    run = cli("accuracy", mapped["map"], "--reference", out, "--out", report)
    assert run.returncode == 0, run.stderr
    assert json.loads(report.read_text())["overall_accuracy"]["estimate"] == pytest.approx(1.0)


def test_products_of_maps_without_labels_show_the_catalog_labels(tmp_path: Path) -> None:
    """A class map written before the CLASS_LABELS tag: quicklook and vectorize label it from the catalog."""
    from dunemap.products.classmap import map_legend

    path = write_class_map(tmp_path / "old.tif", np.arange(4, dtype=np.uint8).repeat(16).reshape(8, 8), UTM, ORIGIN)
    with rasterio.open(path) as src:
        assert "CLASS_LABELS" not in src.tags()
        assert map_legend(src).shown == ("Interdune", "Crescentic (barchan)", "Linear (seif)", "Star")
    out = tmp_path / "old.gpkg"
    assert cli("vectorize", path, "--out", out).returncode == 0
    with sqlite3.connect(out) as db:
        (qml,), = db.execute("SELECT styleQML FROM layer_styles")
    assert [c.get("label") for c in ET.fromstring(qml.split("\n", 1)[1]).iter("category")][:2] == [
        "Interdune", "Crescentic (barchan)"]


def test_synthetic_truth_gets_the_same_legend_as_a_map(mapped, tmp_path: Path) -> None:
    run = cli("synth", "scene", "--region", "namib", "--size", "64", "--out", tmp_path)
    assert run.returncode == 0, run.stderr
    labels = tmp_path / "namib_0_labels.tif"
    truth_names, truth_rat = _categories(style_paths(labels)["aux"])
    map_names, map_rat = _categories(style_paths(mapped["map"])["aux"])
    assert truth_names == map_names and truth_rat == map_rat
    assert style_paths(labels)["qml"].read_text() == style_paths(mapped["map"])["qml"].read_text()


def test_quicklook_draws_a_bottom_up_map_north_up(tmp_path: Path) -> None:
    from PIL import Image

    classes = np.ones((40, 30), np.uint8)  # crescentic (orange) ...
    classes[:8] = 3  # ... with a northern strip of star (purple)
    classes[20:24, 10:20] = 255  # and some nodata
    north_up = write_class_map(tmp_path / "n.tif", classes, UTM, ORIGIN)
    bottom_up = tmp_path / "b.tif"
    with rasterio.open(north_up) as src:
        profile = {**src.profile, "driver": "GTiff", "transform": ORIGIN @ Affine.translation(0, 40) @ Affine.scale(1, -1)}
        profile.pop("blockxsize", None), profile.pop("blockysize", None), profile.pop("tiled", None)
        with rasterio.open(bottom_up, "w", **profile) as dst:
            dst.write(src.read()[:, ::-1, :])
            dst.update_tags(**src.tags())
            dst.write_colormap(1, src.colormap(1))
    for path in (north_up, bottom_up):
        png = tmp_path / f"{path.stem}.png"
        run = cli("quicklook", path, "--out", png, "--dpi", "50")
        assert run.returncode == 0, run.stderr
        rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
        rows_star = np.nonzero((np.abs(rgb - LEGEND.colors[3]).sum(axis=2) < 10))[0]
        rows_cres = np.nonzero((np.abs(rgb - LEGEND.colors[1]).sum(axis=2) < 10))[0]
        assert np.median(rows_star) < np.median(rows_cres), f"{path.name}: the northern strip is not drawn at the top"


def test_quicklook_labels_axes_with_crs_and_lists_nodata(tmp_path: Path) -> None:
    from dunemap.products.quicklook import axis_labels

    x, y = axis_labels(rasterio.crs.CRS.from_string(UTM))
    assert x == "Easting (metre); WGS 84 / UTM zone 33N (EPSG:32633)" and y == "Northing (metre)"
    x, y = axis_labels(rasterio.crs.CRS.from_epsg(4326))
    assert x.startswith("Geodetic longitude (degree)") and y == "Geodetic latitude (degree)"


def test_map_mosaic_of_bottom_up_tiles_equals_the_north_up_raster(mapped, tmp_path: Path) -> None:
    codes = aef_codes(96, 80, seed=3)
    whole = write_aef(tmp_path / "whole.tif", codes)
    west = write_aef(tmp_path / "west.tif", np.ascontiguousarray(codes[:, :, :48]), bottom_up=True)
    east = write_aef(tmp_path / "east.tif", np.ascontiguousarray(codes[:, :, 48:]),
                     transform=ORIGIN @ Affine.translation(48, 0), bottom_up=True)
    with rasterio.open(west) as src:
        assert src.transform.e > 0
    runs = [cli("map", whole, "--weights", mapped["weights"], "--out", tmp_path / "single.tif", *MAP_ARGS),
            cli("map", west, east, "--weights", mapped["weights"], "--out", tmp_path / "mosaic.tif", *MAP_ARGS)]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    with rasterio.open(tmp_path / "single.tif") as a, rasterio.open(tmp_path / "mosaic.tif") as b:
        assert a.transform == b.transform and a.transform.e < 0
        single, mosaic = a.read(1), b.read(1)
    assert (single != 255).all() and len(np.unique(single)) > 1
    np.testing.assert_array_equal(mosaic, single)
