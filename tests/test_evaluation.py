"""``dunemap evaluate`` is exact by default: the published-layout fixture as a one-tile test split gives known metrics."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sklearn.metrics import accuracy_score, cohen_kappa_score

from dunemap.cli import main


def _dunemap(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dunemap", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


@pytest.fixture(scope="module")
def fixture_split(tmp_path_factory, mads) -> Path:
    """The fixture's input as a one-tile test split, labelled on every 4th row and column (where the published
    code's logits are known) with their argmax, rows 0-127 shifted by one class, rows 300-339 ignored (255)."""
    root = tmp_path_factory.mktemp("mads_split")
    x = np.random.default_rng(7).standard_normal((64, 512, 512), dtype=np.float32)
    x = x / np.linalg.norm(x, axis=0, keepdims=True)
    labels = np.full((512, 512), 255, np.uint8)
    labels[::4, ::4] = np.load(mads.logits_every4).argmax(0)
    labels[:128] = np.where(labels[:128] == 255, 255, (labels[:128] + 1) % 10)
    labels[300:340] = 255
    (root / "img_dir" / "test").mkdir(parents=True)
    (root / "ann_dir" / "test").mkdir(parents=True)
    np.save(root / "img_dir" / "test" / "tile.npy", x)
    Image.fromarray(labels).save(root / "ann_dir" / "test" / "tile.png")
    return root


def _published_scores(mads, fixture_split: Path) -> tuple[float, float]:
    """OA and Kappa of the published code's own predictions against the split's labels (scikit-learn)."""
    labels = np.asarray(Image.open(fixture_split / "ann_dir" / "test" / "tile.png"))[::4, ::4].ravel()
    pred = np.load(mads.logits_every4).argmax(0).ravel()
    keep = labels != 255
    return accuracy_score(labels[keep], pred[keep]), cohen_kappa_score(labels[keep], pred[keep])


def _fixture_hashes(mads) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(mads.dir.iterdir())}


def test_default_evaluation_is_exact_and_records_how_it_ran(mads, fixture_split: Path, tmp_path: Path, capsys,
                                                            monkeypatch) -> None:
    before = _fixture_hashes(mads)
    args = ["evaluate", "--data-root", str(fixture_split), "--weights", str(mads.weights),
            "--text-embeddings", str(mads.text), "--no-progress"]
    proc = _dunemap(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "eval_mads-tiny_b0_fusion_fp16_test"  # a new folder here, named after the checkpoint and split
    report = json.loads((out / "metrics.json").read_text())
    oa, kappa = _published_scores(mads, fixture_split)
    assert round(oa * 100, 2) == 72.88  # 86 of the 118 labelled rows of every 4th pixel are not shifted
    assert report["metrics"]["oa"] == pytest.approx(oa, abs=1e-9)  # the published code's numbers, exactly
    assert report["metrics"]["kappa"] == pytest.approx(kappa, abs=1e-9)
    assert report["precision"] == "fp32" and report["device"] == "cpu"
    assert report["torch_version"] == __import__("torch").__version__
    assert report["checkpoint_sha256"] == hashlib.sha256(mads.weights.read_bytes()).hexdigest()
    assert _fixture_hashes(mads) == before  # nothing written beside the weights, and the weights unchanged

    # again through the same entry point in this process, from the same folder
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(args) == 1  # an existing report is never replaced silently
    err = capsys.readouterr().err
    assert "metrics.json: already exists; pass --overwrite" in err and len(err.strip().splitlines()) == 1

    assert main([*args, "--precision", "bf16", "--overwrite"]) == 0
    assert "precision bf16" in capsys.readouterr().out  # asked for, and said so
    assert json.loads((out / "metrics.json").read_text())["precision"] == "bf16"


def test_evaluate_never_writes_into_a_training_run(mads, fixture_split: Path, tmp_path: Path, capsys) -> None:
    """``evaluate --out-dir RUN --overwrite`` would replace the run's metrics.json history: refused in one line
    (in this process; the test above runs the command as a real process)."""
    run = tmp_path / "RUN"
    run.mkdir()
    (run / "config.yaml").write_text("epochs: 1\n")
    (run / "metrics.json").write_text("[]\n")
    assert main(["evaluate", "--data-root", str(fixture_split), "--weights", str(mads.weights),
                 "--text-embeddings", str(mads.text), "--out-dir", str(run), "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert "is a training run folder" in err and len(err.strip().splitlines()) == 1, err
    assert (run / "metrics.json").read_text() == "[]\n" and sorted(p.name for p in run.iterdir()) == [
        "config.yaml", "metrics.json"]
