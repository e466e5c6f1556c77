"""The demo pipeline end to end on a micro configuration, and its resumption."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image
from recompute import hashes, sklearn_scores

from dunemap.cli import main
from dunemap.demo import DemoConfig, run_demo
from dunemap.demo_report import pooled_note
from dunemap.metrics import ConfusionMatrix


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

    _check_the_report_explains_itself(out, result, report, truth, net, rf)

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


def _check_the_report_explains_itself(out: Path, result, report: str, truth: np.ndarray, net: np.ndarray,
                                     rf: np.ndarray) -> None:
    names = list(result.map_metrics["per_class"])
    # the random forest's map is a class map like the network's: colour table, legend companions, quicklook takes it
    with rasterio.open(out / "map" / "heldout_rf_classes.tif") as f, rasterio.open(out / "map" / "heldout_classes.tif") as m:
        assert f.colormap(1) == m.colormap(1) and f.tags()["DUNEMAP_PRODUCT"] == "classes"
        assert f.overviews(1) == m.overviews(1) and f.block_shapes == m.block_shapes
        assert "random forest" in f.tags()["MODEL"]
    assert (out / "map" / "heldout_rf_classes.qml").is_file() and (out / "map" / "heldout_rf_classes.tif.aux.xml").is_file()
    assert main(["quicklook", str(out / "map" / "heldout_rf_classes.tif"), "--out", str(out.parent / "rf.png")]) == 0

    # classes the scene's truth lacks are marked in the per-class table, and only those
    table = report.split("## Per class on the held-out scene (IoU)")[1].split("\n## ")[0]
    rows = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows
    for row in rows:
        name = row.removesuffix(" (absent from the truth)")
        assert (row != name) == (not (truth == names.index(name)).any()), row

    # the confusions that dominate the network's errors, recomputed from the GeoTIFFs
    valid = truth != 255
    pairs = np.zeros((10, 10), dtype=np.int64)
    np.add.at(pairs, (truth[valid], net[valid]), 1)
    np.fill_diagonal(pairs, 0)
    if pairs.sum():
        t, p = np.unravel_index(np.argmax(pairs), pairs.shape)
        assert f"{names[t]} as {names[p]} {100 * pairs[t, p] / pairs.sum():.0f} %" in report
        assert f"{names[t]} as {names[p]}" in _png_text(out / "map" / "heldout_comparison.png")["Description"]

    # the pooled test-tile score is explained when it is outside its parts, and only then
    parts = [m["miou"] for m in result.test_by_scene.values()]
    outside = not min(parts) <= result.test_metrics["miou"] <= max(parts)
    assert ("both of its parts" in report) == outside

    # the figures are linked, the confusion matrix names its split, the trust pictures exist
    assert "](eval_test/confusion_matrix.png)" in report and "](map/heldout_trust.png)" in report
    assert _png_text(out / "eval_test" / "confusion_matrix.png")["Title"].startswith("confusion matrix, test split")
    assert (out / "eval_test" / "reliability.png").exists() == ("](eval_test/reliability.png)" in report)
    assert (out / "map" / "heldout_classes_applicability.tif").is_file()
    with Image.open(out / "map" / "heldout_trust.png") as png:
        assert png.size[0] > 0
    assert result.trust["applicability"]["outside_share"] is not None
    with rasterio.open(out / "map" / "heldout_classes_applicability.tif") as a:
        inside = a.read(2) == 1
    assert result.trust["applicability"]["outside_share"] == pytest.approx((~inside[valid]).mean())
    assert "## Where the map may be trusted" in report and "% of the scene outside" in report
    # what a fresh run must share to reproduce the figures
    assert f"torch {torch.__version__}" in report and "## What a fresh run reproduces" in report


def _png_text(path: Path) -> dict[str, str]:
    with Image.open(path) as png:
        return dict(png.text)


def _metrics(pred: list[int], truth: list[int]) -> dict:
    cm = ConfusionMatrix(3)
    cm.update(np.array(pred), np.array(truth))
    return cm.compute().to_dict(["a", "b", "c"])


def test_pooled_note_explains_a_pooled_miou_above_both_parts() -> None:
    # in-scene: a and b, 5 a pixels predicted as c (absent there: c scores 0); new scenes: a and c, half of c as a
    in_t, in_p = [0] * 50 + [1] * 50, [0] * 45 + [2] * 5 + [1] * 50
    new_t, new_p = [0] * 50 + [2] * 50, [0] * 50 + [2] * 25 + [0] * 25
    parts = {"in_scene": _metrics(in_p, in_t), "new_scene": _metrics(new_p, new_t)}
    pooled = _metrics(in_p + new_p, in_t + new_t)
    assert pooled["miou"] > max(m["miou"] for m in parts.values())  # 0.738 against 0.633 and 0.583
    note = pooled_note(pooled, parts)
    assert "is above both of its parts" in note
    assert "- c: 45.45 % / 0.00 % (absent, predicted) / 50.00 %" in note
    assert "- b: 100.00 % / 100.00 % / not present" in note
    assert pooled_note(parts["in_scene"], {"in_scene": parts["in_scene"], "new_scene": parts["in_scene"]}) == ""


def test_demo_cli_prints_the_headline(tmp_path: Path, capsys) -> None:
    code = main(["demo", "--out", str(tmp_path / "d"), "--model", "mit_tiny", "--epochs", "1", "--scene-size", "128", "--tile", "32",
                 "--scenes-per-region", "1", "--map-size", "128", "--map-window", "64", "--precision", "fp32",
                 "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "test tiles:" in printed and "held-out scene:" in printed and "report.md" in printed
    assert "random forest:" in printed and "heldout_comparison.png" in printed
