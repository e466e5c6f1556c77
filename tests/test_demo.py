"""The demo pipeline end to end on a micro configuration, and its resumption."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from recompute import hashes, sklearn_scores

from dunemap.cli import main
from dunemap.demo import DemoConfig, run_demo


def _micro(out: Path) -> DemoConfig:
    return DemoConfig(out=out, regions=["namib", "qaidam"], scenes_per_region=3, scene_size=128, tile=32,
                      model="mit_tiny", epochs=1, batch_size=4, map_size=160, map_window=64, rf_trees=10,
                      rf_pixels_per_class=50, precision="fp32", progress=False)


def test_demo_runs_every_stage_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = run_demo(_micro(out))
    for rel in ("data/manifest.csv", "run/best_model.pth", "eval_test/metrics.json", "scene/heldout_emb.tif",
                "map/heldout_classes.tif", "map/heldout_rf_classes.tif", "map/heldout_quicklook.png",
                "map/heldout_comparison.png", "report.md"):
        assert (out / rel).stat().st_size > 0, rel
    with rasterio.open(out / "map" / "heldout_rf_classes.tif") as f, rasterio.open(out / "scene" / "heldout_labels.tif") as t:
        rf, truth = f.read(1), t.read(1)
    assert ((rf == 255) == (truth == 255)).all() and set(np.unique(rf)) <= set(range(10)) | {255}
    assert set(result.test_by_scene) == {"in_scene", "new_scene"}  # whole scenes held out, and blocks of the others
    with rasterio.open(out / "map" / "heldout_classes.tif") as m, rasterio.open(out / "scene" / "heldout_emb.tif") as e:
        assert m.crs == e.crs and m.transform == e.transform and m.colormap(1)
        net = m.read(1)
    # the reported scores of both maps, recomputed from the written GeoTIFFs with scikit-learn
    for pred, reported in ((net, result.map_metrics), (rf, result.rf_map_metrics)):
        expected = sklearn_scores(pred, truth, 10)
        assert reported["oa"] == pytest.approx(expected["oa"], abs=1e-9)
        assert reported["miou"] == pytest.approx(expected["miou"], abs=1e-9)
    evaluated = json.loads((out / "eval_test" / "metrics.json").read_text())
    assert result.test_metrics == evaluated["metrics"]  # the headline is what evaluate wrote
    assert sum(result.areas_km2.values()) > 0
    report = (out / "report.md").read_text()
    assert "mIoU" in report and "km2" in report
    for heading in ("## Headline: memory of the scene against new ground", "## Held-out scene",
                    "## Per class on the held-out scene"):
        assert heading in report
    assert "| test tiles of new scenes (never seen in training) |" in report
    assert "| held-out scene: per-pixel random forest, same training tiles |" in report
    assert "](map/heldout_comparison.png)" in report

    stamp = (out / "run" / "best_model.pth").stat().st_mtime_ns
    map_stamp = (out / "map" / "heldout_classes.tif").stat().st_mtime_ns
    before = {p: h for p, h in hashes(out).items() if p.name != "report.md"}
    again = run_demo(_micro(out))  # every stage already complete: nothing is redone
    assert (out / "run" / "best_model.pth").stat().st_mtime_ns == stamp
    assert (out / "map" / "heldout_classes.tif").stat().st_mtime_ns == map_stamp
    assert {p: h for p, h in hashes(out).items() if p.name != "report.md"} == before  # no file's bytes changed
    assert again.map_metrics == result.map_metrics
    with rasterio.open(out / "map" / "heldout_classes.tif") as m:
        assert (m.tags()["WINDOW"], m.tags()["STRIDE"]) == ("64", "32")  # stride 0 = half the window

    config = _micro(out)
    config.map_stride = 48
    run_demo(config)  # another stride: the map is redone, never reported with the old one
    with rasterio.open(out / "map" / "heldout_classes.tif") as m:
        assert m.tags()["STRIDE"] == "48"
    assert (out / "run" / "best_model.pth").stat().st_mtime_ns == stamp
    assert "64 px windows, stride 48 px" in (out / "report.md").read_text()


def test_demo_cli_prints_the_headline(tmp_path: Path, capsys) -> None:
    code = main(["demo", "--out", str(tmp_path / "d"), "--model", "mit_tiny", "--epochs", "1", "--scene-size", "192", "--tile", "32",
                 "--scenes-per-region", "1", "--map-size", "128", "--map-window", "64", "--precision", "fp32",
                 "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "test tiles:" in printed and "held-out scene:" in printed and "report.md" in printed
    assert "random forest:" in printed and "heldout_comparison.png" in printed
