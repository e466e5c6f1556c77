"""The mapping benchmark and its model trainer, end to end on tiny sizes (slow: several fresh interpreters)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dunemap.runtime import load_predictor

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_mapping", BENCHMARKS / "bench_mapping.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("length, offset", [(2048, 128), (2048, 0), (600, 128), (1000, 100)])
def test_shifted_seed_grid_covers_the_axis_with_whole_windows(length: int, offset: int) -> None:
    starts = _bench_module().shifted_starts(length, offset)
    assert starts[0] == 0 and starts == sorted(set(starts))
    assert all(s + 512 <= length for s in starts)
    covered = set()
    for s in starts:
        covered.update(range(s, s + 512))
    assert covered == set(range(length))
    assert all((s - offset) % 256 == 0 for s in starts[1:-1])  # the seed's stride, moved by the offset


@pytest.mark.slow
def test_bench_mapping_compares_designs_on_a_scene(tmp_path: Path, tiny_checkpoint: Path) -> None:
    weights = tiny_checkpoint
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_mapping.py"), "--size", "96", "--scene", "namib", "--weights",
         str(weights), "--threads", "1", "--work", str(tmp_path / "work"), "--project", "1024", "--no-defaults",
         "--variant", "64:32:2:fp32:uniform", "--variant", "96:96:1:fp32:gaussian:1", "--shifted-seed", "32",
         "--json", str(out)],
        check=False, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| (a) seed: 512/256" in proc.stdout and "| variant 64:32:2:fp32:uniform |" in proc.stdout
    report = json.loads(out.read_text())
    seed, shifted, small, whole = report["runs"]
    assert report["trained_weights"] and report["threads"] == 1
    assert (seed["windows"], shifted["windows"], small["windows"], whole["windows"]) == (1, 1, 4, 1)
    assert (seed["project_windows"], small["project_windows"]) == (9, 31 ** 2)
    # the seed's single (whole-raster) window is what a whole-raster window predicts: same model, same input
    assert whole["agreement"] > 0.99
    for run in report["runs"]:
        assert 0.0 <= run["miou"] <= 1.0 and 0.0 <= run["agreement"] <= 1.0
        assert 0 < run["peak_rss_mib"] < 4096 and run["cpu_seconds"] > 0


@pytest.mark.slow
def test_train_bench_model_writes_a_loadable_checkpoint(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "train_bench_model.py"), "--out", str(tmp_path), "--model", "mit_tiny",
         "--scene-size", "64", "--tile", "32", "--scenes-per-region", "1", "--epochs", "1", "--threads", "1"],
        check=False, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((tmp_path / "train_bench_model.json").read_text())
    assert record["epochs_run"] == 1 and len(record["history"]) == 1
    predictor = load_predictor(tmp_path / "mit_tiny_synth.pth", precision="fp32")
    assert predictor.config.name == "mit_tiny" and predictor.num_classes == 10
