"""The speed benchmark measures real forward and training steps and writes its own BENCHMARKS.md section."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dunemap.comparison.speed import SpeedCase, SpeedConfig, measure
from dunemap.cli import main
from dunemap.errors import ConfigError

QUALITY = "<!-- quality:begin -->\nquality numbers\n<!-- quality:end -->"


def test_cases_cover_models_sizes_modes_and_precisions(tmp_path: Path) -> None:
    cfg = SpeedConfig(out=tmp_path, models=["mit_tiny", "unet"], sizes=[64], extra_sizes={"mit_tiny": [96]})
    cases = cfg.cases()
    assert len(cases) == (2 + 1) * 2 * 2
    assert cases[0] == SpeedCase("mit_tiny", 64, "fp32", "forward")
    assert {c.size for c in cases if c.model == "unet"} == {64}


def test_measure_times_a_training_step_that_changes_the_weights() -> None:
    import torch

    row = measure(SpeedCase("mit_tiny", 32, "fp32", "train"), batch_size=2, warmup=0, iters=2,
                  device=torch.device("cpu"))
    assert row["samples_per_s"] == pytest.approx(2 / row["median_s"]) and row["min_s"] <= row["median_s"]
    assert row["parameters"] > 1000 and row["iters"] == 2


def test_cli_speed_writes_json_table_and_its_section(tmp_path: Path, capsys) -> None:
    md = tmp_path / "BENCHMARKS.md"
    md.write_text(f"# Benchmarks\n\n{QUALITY}\n")
    code = main(["benchmark", "speed", "--models", "mit_tiny,unet", "--sizes", "32", "--extra-sizes", "mit_tiny:64",
                 "--batch-size", "1", "--warmup", "0", "--iters", "1", "--out", str(tmp_path / "speed"),
                 "--benchmarks-md", str(md), "--threads", "1", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| `mit_tiny` | 64x64 |" in printed and "| `unet` | 32x32 |" in printed
    data = json.loads((tmp_path / "speed" / "speed.json").read_text())
    assert len(data["rows"]) == 3 * 4 and all(r["samples_per_s"] > 0 for r in data["rows"])
    assert data["command"].startswith("dunemap benchmark speed --models mit_tiny,unet --sizes 32")
    text = md.read_text()
    assert text.startswith(f"# Benchmarks\n\n{QUALITY}\n\n<!-- speed:begin -->\n## Speed")
    assert "| Model | Input | forward fp32 | forward bf16 | train fp32 | train bf16 |" in text
    assert "Mapping throughput" in text and "torch " in text


def test_speed_config_errors_name_the_bad_value(tmp_path: Path, capsys) -> None:
    with pytest.raises(ConfigError, match="unknown model 'mit_b9'; valid: "):
        SpeedConfig(out=tmp_path, models=["mit_b9"])
    with pytest.raises(ConfigError, match=r"input size\(s\) \[8\] too small: expected at least 32 pixels"):
        SpeedConfig(out=tmp_path, sizes=[8])
    with pytest.raises(SystemExit):
        main(["benchmark", "speed", "--extra-sizes", "mit_b2=512"])
    assert "expected MODEL:SIZE pairs such as mit_b2:512, got 'mit_b2=512'" in capsys.readouterr().err
