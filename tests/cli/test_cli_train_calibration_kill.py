"""A training run killed during its end-of-run calibration: ``--resume`` finishes the calibration (issue 29 item 13).

Real processes: ``dunemap train`` is SIGKILLed once its last epoch is on disk (the calibration is then running),
``train --resume`` with the run's own options finishes it, and ``map --applicability`` uses the result.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safety_helpers import REPO, run_cli, unit_vectors, write_tif

from dunemap.cli import main

BANDS = 16


def _train(data: Path, save: Path, *extra: str) -> list[str]:
    return ["train", "--data-root", str(data), "--save-dir", str(save), "--model", "mit_tiny", "--bands", str(BANDS),
            "--epochs", "1", "--batch-size", "4", "--text", "random", "--catalog", str(data / "catalog.yaml"),
            "--no-progress", "--device", "cpu", "--precision", "fp32", "--seed", "3", *extra]


def _calibration(path: Path) -> dict:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    return {"calibration": dict(obj.get("calibration") or {}), "applicability": obj.get("applicability")}


@pytest.mark.slow
def test_resume_finishes_the_calibration_of_a_run_killed_while_calibrating(tmp_path: Path, make_tiny_dataset) -> None:
    data = make_tiny_dataset(tmp_path / "data", n_train=16, n_val=4, n_test=1)
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "dunemap", *_train(data, run)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env, cwd=REPO)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if len(json.loads((run / "metrics.json").read_text())) == 1:  # the last epoch is saved: calibrating
                proc.send_signal(signal.SIGKILL)
                break
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.002)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    killed = _calibration(run / "best_model.pth")
    assert killed == {"calibration": {}, "applicability": None}, "killed after the calibration was published"

    resumed = run_cli(*_train(data, run, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "give more epochs" not in resumed.stderr
    finished = _calibration(run / "best_model.pth")
    assert finished["calibration"]["temperature"] > 0 and finished["applicability"] is not None

    whole = tmp_path / "whole"  # the same run, never interrupted: the reference, run through the CLI in this process
    assert main(_train(data, whole)) == 0
    reference = _calibration(whole / "best_model.pth")
    assert finished["calibration"]["temperature"] == pytest.approx(reference["calibration"]["temperature"], rel=1e-6)
    assert finished["applicability"]["threshold"] == pytest.approx(reference["applicability"]["threshold"], rel=1e-6)

    again = run_cli(*_train(data, run, "--resume"))  # nothing left to do now: more epochs are needed to continue
    assert again.returncode == 1 and "give more epochs" in again.stderr

    emb = write_tif(tmp_path / "emb.tif", unit_vectors(64, 64))
    mapped = run_cli("map", emb, "--weights", run / "best_model.pth", "--out", tmp_path / "m.tif", "--applicability",
                     "--window", "64", "--stride", "32", "--device", "cpu", "--precision", "fp32", "--no-progress")
    assert mapped.returncode == 0, mapped.stderr[-3000:]
    assert (tmp_path / "m_applicability.tif").exists()
