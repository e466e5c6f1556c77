"""The Earth Engine export: the printed Code Editor script and the earthengine-api path."""

from __future__ import annotations

import re
import sys
import types

import pytest

from dunemap.acquire.gee import BANDS, COLLECTION, gee_script, plan_export, start_export
from dunemap.acquire.index import resolve_area, utm_epsg
from dunemap.cli import main
from dunemap.errors import ConfigError
from dunemap.regions import REGIONS


def test_utm_epsg_and_area_resolution():
    assert utm_epsg(15.2, -25.1) == 32733
    assert utm_epsg(-115.85, 34.95) == 32611
    assert utm_epsg(179.9, 1.0) == 32660 and utm_epsg(-180.0, -1.0) == 32701
    for name, region in REGIONS.items():
        assert resolve_area(name, None) == (name, region.bbox, region.epsg)
        assert utm_epsg(*region.center) == region.epsg  # the presets sit in the zone of their centre
    name, bbox, epsg = resolve_area(None, (92.5, 37.0, 92.7, 37.2))
    assert bbox == (92.5, 37.0, 92.7, 37.2) and epsg == 32646 and name.startswith("bbox_")
    with pytest.raises(ConfigError, match="either a region"):
        resolve_area("namib", (1, 2, 3, 4))
    with pytest.raises(ConfigError, match="bbox"):
        resolve_area(None, (15.0, -24.0, 14.0, -23.0))


def test_script_for_preset_names_collection_bands_scale_and_bbox():
    script = gee_script(plan_export(2023, region="namib", folder="dunes"))
    w, s, e, n = REGIONS["namib"].bbox
    assert f"ee.ImageCollection('{COLLECTION}')" in script
    assert ".filterDate('2023-01-01', '2024-01-01')" in script
    assert ".filterBounds(region)" in script and ".mosaic()" in script
    assert f"ee.Geometry.Rectangle([{w!r}, {s!r}, {e!r}, {n!r}], 'EPSG:4326', false)" in script
    band_list = re.search(r"var bands = \[(.*?)\];", script).group(1)
    assert [b.strip(" '") for b in band_list.split(",")] == [f"A{i:02d}" for i in range(64)] == list(BANDS)
    export = script[script.index("Export.image.toDrive"):]
    assert "scale: 10," in export and "crs: 'EPSG:32733'" in export and "fileFormat: 'GeoTIFF'" in export
    assert "region: region" in export and 'folder: "dunes"' in export
    assert float(re.search(r"maxPixels: ([0-9e+.]+)", export).group(1)) >= 1e10
    assert 'fileNamePrefix: "aef_namib_2023"' in export
    assert script.count("{") == script.count("}") and script.count("(") == script.count(")")


def test_cli_prints_script_for_bbox(capsys):
    assert main(["gee-script", "--bbox", "-70.4", "-24.2", "-70.1", "-24.0", "--year", "2021",
                 "--out-prefix", "atacama_test"]) == 0
    out = capsys.readouterr().out
    assert "[-70.4, -24.2, -70.1, -24.0]" in out and "crs: 'EPSG:32719'" in out
    assert "'2021-01-01', '2022-01-01'" in out and 'fileNamePrefix: "atacama_test"' in out
    assert "folder:" not in out


def test_cli_rejects_bad_inputs(capsys):
    assert main(["gee-script", "--region", "namib", "--year", "2015"]) == 1
    err = capsys.readouterr().err
    assert "year 2015" in err and len(err.strip().splitlines()) == 1
    assert main(["gee-script", "--bbox", "10", "5", "9", "6", "--year", "2020"]) == 1
    assert "bbox" in capsys.readouterr().err


def test_fetch_gee_without_earthengine_api_is_one_line_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ee", None)  # makes `import ee` raise ImportError
    with pytest.raises(ConfigError, match="earthengine-api is not installed"):
        start_export(plan_export(2023, region="mojave"))
    assert main(["fetch-gee", "--region", "mojave", "--year", "2023"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("dunemap: error: earthengine-api is not installed") and "\n" not in err


def _fake_ee(fail_init: bool) -> tuple[types.ModuleType, dict]:
    """A stand-in for the third-party ``ee`` module recording the calls it gets."""
    calls: dict = {"chain": []}

    class Chain:
        def __init__(self, name):
            calls["chain"].append(("ImageCollection", name))

        def __getattr__(self, method):
            def call(*args):
                calls["chain"].append((method, args))
                return self
            return call

    def initialize(project=None):
        if fail_init:
            raise RuntimeError("Please authorize access to your\nEarth Engine account")
        calls["project"] = project

    class Task:
        id = "TASK123"

        def start(self):
            calls["started"] = True

    def to_drive(**kwargs):
        calls["export"] = kwargs
        return Task()

    ee = types.ModuleType("ee")
    ee.Initialize = initialize
    ee.ImageCollection = Chain
    ee.Geometry = types.SimpleNamespace(Rectangle=lambda coords, proj, geodesic: ("rect", tuple(coords), proj, geodesic))
    ee.batch = types.SimpleNamespace(Export=types.SimpleNamespace(image=types.SimpleNamespace(toDrive=to_drive)))
    return ee, calls


def test_fetch_gee_runs_the_same_export(monkeypatch, capsys):
    ee, calls = _fake_ee(fail_init=False)
    monkeypatch.setitem(sys.modules, "ee", ee)
    assert main(["fetch-gee", "--region", "qaidam", "--year", "2022", "--project", "my-proj",
                 "--folder", "aef"]) == 0
    assert "TASK123" in capsys.readouterr().out
    assert calls["project"] == "my-proj" and calls["started"]
    exp = calls["export"]
    assert exp["scale"] == 10 and exp["crs"] == "EPSG:32646" and exp["fileFormat"] == "GeoTIFF"
    assert exp["region"] == ("rect", REGIONS["qaidam"].bbox, "EPSG:4326", False) and exp["folder"] == "aef"
    assert exp["maxPixels"] >= 1e10 and exp["fileNamePrefix"] == "aef_qaidam_2022"
    chain = calls["chain"]
    assert chain[0] == ("ImageCollection", COLLECTION)
    assert ("filterDate", ("2022-01-01", "2023-01-01")) in chain and ("mosaic", ()) in chain
    assert ("select", (list(BANDS),)) in chain


def test_fetch_gee_unauthenticated_is_one_line_error(monkeypatch, capsys):
    ee, _ = _fake_ee(fail_init=True)
    monkeypatch.setitem(sys.modules, "ee", ee)
    assert main(["fetch-gee", "--bbox", "14.6", "-24.8", "14.8", "-24.6", "--year", "2023"]) == 1
    err = capsys.readouterr().err.strip()
    assert "not authenticated" in err and "earthengine authenticate" in err and "\n" not in err
