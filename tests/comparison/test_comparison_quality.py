"""The quality harness end to end on the micro preset: rows, tables, figures, the BENCHMARKS.md section, resuming."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dunemap.comparison.quality import run_quality
from dunemap.comparison.spec import METHODS, PRESETS, QualityConfig, generator_fingerprint, plan_runs
from dunemap.cli import main
from dunemap.data.manifest import TileRecord, write_manifest
from dunemap.data.seed_layout import write_sample
from dunemap.data.transforms import AUGMENTATIONS
from dunemap.errors import ConfigError
from dunemap.synth.dataset import read_summary

MICRO_IDS = {f"{fold}__{m}__seed0" for fold in ("loro-atacama", "in_region", "new_scene") for m in METHODS}
OTHER_SECTION = "<!-- speed:begin -->\nspeed numbers\n<!-- speed:end -->"


@pytest.fixture(scope="module")
def micro(tmp_path_factory) -> Path:
    """One micro-preset run through the CLI (text cache in a temporary folder, never the user's)."""
    root = tmp_path_factory.mktemp("micro")
    (root / "B.md").write_text(f"# Benchmarks\n\nintro\n\n{OTHER_SECTION}\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DUNEMAP_CACHE", str(root / "cache"))
        code = main(["benchmark", "quality", "--preset", "micro", "--seeds", "0", "--out", str(root / "out"),
                     "--benchmarks-md", str(root / "B.md"), "--threads", "1", "--no-progress"])
    assert code == 0
    return root


def _copy(micro: Path, tmp_path: Path) -> Path:
    shutil.copytree(micro / "out", tmp_path / "out")
    shutil.copytree(micro / "cache", tmp_path / "cache")
    return tmp_path / "out"


def test_micro_preset_writes_rows_tables_figures_and_section(micro: Path) -> None:
    out = micro / "out"
    assert {p.stem for p in (out / "runs").glob("*.json")} == MICRO_IDS
    row = json.loads((out / "runs" / "loro-atacama__fusion__seed0.json").read_text())
    assert row["test_splits"] and row["n_test_pixels"] == int(np.sum(row["confusion_matrix"])) > 0
    assert row["text"] == "catalog" and row["model"] == "mit_tiny" and len(row["per_class_iou"]) == 10
    assert row["settings"]["budget"]["generator"] == generator_fingerprint()  # new generator => new data and rows
    assert len(list((out / "work").glob("data-*"))) == 1
    assert not list((out / "work" / "train").rglob("*.pth"))  # checkpoints removed once the row is stored
    for name in ("oa", "miou", "kappa", "mf1"):
        with Image.open(out / f"quality_{name}.png") as im:
            assert im.format == "PNG" and im.size[0] > 300
    for protocol in ("loro", "in_region", "new_scene"):
        assert (out / f"quality_per_class_iou_{protocol}.png").stat().st_size > 1000
    new = json.loads((out / "runs" / "new_scene__fusion__seed0.json").read_text())
    same = json.loads((out / "runs" / "in_region__fusion__seed0.json").read_text())
    assert new["best_epoch"] == same["best_epoch"] and new["n_test_pixels"] != same["n_test_pixels"]
    summary = json.loads((out / "quality_summary.json").read_text())
    assert set(summary["summary"]) == {"loro", "in_region", "new_scene"} and set(summary["summary"]["loro"]) == set(METHODS)

    text = (micro / "B.md").read_text()
    assert text.startswith("# Benchmarks\n\nintro\n\n" + OTHER_SECTION)  # the other section is kept
    section = text[text.index("<!-- quality:begin -->"):text.index("<!-- quality:end -->")]
    assert "Command: `dunemap benchmark quality --preset micro --seeds 0 " in section
    assert "Machine: " in section and "torch " in section and "1 thread(s)" in section
    for method in METHODS.values():
        assert f"| {method.label} |" in section
    assert "### Leave-one-region-out" in section and "### In-scene" in section and "### New-scene" in section
    assert "In-scene → new-scene mIoU (the same models): " in section
    assert "New-scene: the best network, " in section
    assert "(out/quality_miou.png)" in section  # figure links relative to B.md
    assert "only 1 seed, too few to judge the effect of the catalog text" in section
    assert "per-pixel random forest, a difference of" in section
    assert section == "<!-- quality:begin -->\n" + (out / "quality.md").read_text().replace(
        "](quality_", "](out/quality_").replace("`runs/`", "`out/runs/`").replace(
        "`quality_summary.json`", "`out/quality_summary.json`")


def test_preset_augmentation_and_landform_scale_reach_the_runs_and_the_data(micro: Path) -> None:
    out = micro / "out"
    preset = PRESETS["micro"]
    for p in PRESETS.values():
        assert p.augment in AUGMENTATIONS, p.name
    assert preset.augment == "flip_rot90_spectral"  # the micro runs train through the spectral augmentation
    row = json.loads((out / "runs" / "in_region__segformer__seed0.json").read_text())
    assert row["settings"]["budget"]["augment"] == preset.augment
    assert row["settings"]["budget"]["data"]["region_px"] == preset.data.region_px
    (data,) = (out / "work").glob("data-*")
    assert read_summary(data)["config"]["region_px"] == preset.data.region_px


def test_second_call_reuses_every_stored_row(micro: Path, tmp_path: Path, monkeypatch) -> None:
    out = _copy(micro, tmp_path)
    monkeypatch.setenv("DUNEMAP_CACHE", str(tmp_path / "cache"))
    before = {p.name: (p.stat().st_mtime_ns, p.read_text()) for p in (out / "runs").iterdir()}
    result = run_quality(QualityConfig(out=out, preset="micro", seeds=[0], threads=1, progress=False))
    assert result.ran == [] and set(result.reused) == MICRO_IDS
    assert {p.name: (p.stat().st_mtime_ns, p.read_text()) for p in (out / "runs").iterdir()} == before
    assert result.files["markdown"].is_file() and "benchmarks_md" not in result.files


def test_a_missing_row_is_the_only_run_recomputed(micro: Path, tmp_path: Path, monkeypatch) -> None:
    out = _copy(micro, tmp_path)
    monkeypatch.setenv("DUNEMAP_CACHE", str(tmp_path / "cache"))
    stored = json.loads((out / "runs" / "in_region__segformer__seed0.json").read_text())
    (out / "runs" / "in_region__segformer__seed0.json").unlink()
    result = run_quality(QualityConfig(out=out, preset="micro", seeds=[0], threads=1, progress=False))
    assert result.ran == ["in_region__segformer__seed0"] and len(result.reused) == len(MICRO_IDS) - 1
    again = json.loads((out / "runs" / "in_region__segformer__seed0.json").read_text())
    assert again["confusion_matrix"] == stored["confusion_matrix"]  # same seed, same data: same result


def test_stored_rows_of_other_settings_are_refused(micro: Path, tmp_path: Path, monkeypatch) -> None:
    out = _copy(micro, tmp_path)
    monkeypatch.setenv("DUNEMAP_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match=r"loro-atacama__rf__seed0\.json: stored run used different settings"):
        run_quality(QualityConfig(out=out, preset="micro", seeds=[0], precision="bf16", progress=False))


def test_plan_runs_orders_protocols_folds_methods_seeds() -> None:
    runs = plan_runs(["loro", "in_region"], ["namib", "mojave"], ["rf", "fusion"], [0, 1])
    assert len(runs) == 12
    assert [r.run_id for r in runs[:3]] == ["loro-namib__rf__seed0", "loro-namib__rf__seed1",
                                           "loro-namib__fusion__seed0"]
    assert runs[-1].run_id == "in_region__fusion__seed1" and runs[-1].holdout is None


def test_config_rejects_unknown_names() -> None:
    with pytest.raises(ConfigError, match="unknown benchmark method 'svm'; valid: fusion, fusion_random, knn, rf"):
        QualityConfig(out=Path("x"), methods=["rf", "svm"])
    with pytest.raises(ConfigError, match="unknown quality preset 'huge'; valid: full, micro, small"):
        QualityConfig(out=Path("x"), preset="huge")
    with pytest.raises(ConfigError, match="repeat an entry"):
        QualityConfig(out=Path("x"), seeds=[0, 0])
    with pytest.raises(ConfigError, match="unknown precision 'fp16'; valid: auto, bf16, fp32"):
        QualityConfig(out=Path("x"), precision="fp16")


def test_cli_rejects_bad_options(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["benchmark", "quality", "--methods", "rf,svm", "--out", str(tmp_path)])
    assert exc.value.code == 2 and "unknown method ['svm']; valid: rf, knn" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["benchmark", "quality", "--seeds", "0,x"])
    assert "expected comma-separated integers such as 0,1,2, got '0,x'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def _regional_dataset(root: Path, make_tile) -> Path:
    rng = np.random.default_rng(0)
    records = []
    for region in ("east", "west"):
        for split, n in (("train", 3), ("val", 1), ("test", 1)):
            for i in range(n):
                name = f"{region}_{split}_{i}"
                write_sample(root, split, name, *make_tile(rng))
                records.append(TileRecord(name=name, split=split, region=region))
    write_manifest(root, records)
    return root


def test_own_dataset_holds_out_every_region_and_region_errors_are_clear(
    tiny_dataset: Path, tmp_path: Path, make_tiny_tile
) -> None:
    data = _regional_dataset(tmp_path / "regional", make_tiny_tile)
    shutil.copy(tiny_dataset / "catalog.yaml", data / "catalog.yaml")
    cfg = {"out": tmp_path / "out", "preset": "micro", "seeds": [0, 1], "methods": ["rf", "knn"], "data_root": data,
           "catalog": data / "catalog.yaml", "in_channels": 16, "progress": False}
    result = run_quality(QualityConfig(**cfg))
    assert {r["run_id"] for r in result.rows} == {f"{f}__{m}__seed{s}" for f in ("loro-east", "loro-west", "in_region")
                                                 for m in ("rf", "knn") for s in (0, 1)}
    in_region = [r for r in result.rows if r["protocol"] == "in_region"]
    assert all(r["metrics"]["oa"] > 0.9 for r in in_region)  # separable blobs: the pixel baselines learn them
    loro = next(r for r in result.rows if r["run_id"] == "loro-east__rf__seed0")
    assert loro["test_splits"] == ["train", "val", "test"] and loro["n_test_pixels"] == 5 * 64 * 64
    text = (tmp_path / "out" / "quality.md").read_text()
    assert "mIoU per held-out region:" in text and "| Method | east | west |" in text
    with pytest.raises(ConfigError, match=r"held-out region\(s\) \['north'\] are not in the dataset; its regions: "
                                          r"\['east', 'west'\]"):
        run_quality(QualityConfig(**{**cfg, "out": tmp_path / "o2", "holdout_regions": ["north"]}))
