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

MADS = Path("/work/shared/fixtures/mads")
WEIGHTS, TEXT = MADS / "tiny_b0_fusion.pth", MADS / "text_embeds_detailed.npy"


def _dunemap(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dunemap", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


@pytest.fixture(scope="module")
def fixture_split(tmp_path_factory) -> Path:
    """The fixture's input as a one-tile test split; labels = argmax of its logits, rows 0-127 shifted by one
    class, rows 300-339 ignored (255)."""
    if not WEIGHTS.is_file():
        pytest.skip(f"{MADS} not present")
    root = tmp_path_factory.mktemp("mads_split")
    x = np.random.default_rng(7).standard_normal((64, 512, 512), dtype=np.float32)
    x = x / np.linalg.norm(x, axis=0, keepdims=True)
    labels = np.load(MADS / "tiny_logits.npy").argmax(0).astype(np.uint8)
    labels[:128] = (labels[:128] + 1) % 10
    labels[300:340] = 255
    (root / "img_dir" / "test").mkdir(parents=True)
    (root / "ann_dir" / "test").mkdir(parents=True)
    np.save(root / "img_dir" / "test" / "tile.npy", x)
    Image.fromarray(labels).save(root / "ann_dir" / "test" / "tile.png")
    return root


def test_default_evaluation_is_exact_and_records_how_it_ran(fixture_split: Path, tmp_path: Path) -> None:
    before = sorted(p.name for p in MADS.iterdir())
    args = ["evaluate", "--data-root", str(fixture_split), "--weights", str(WEIGHTS), "--text-embeddings", str(TEXT),
            "--no-progress"]
    proc = _dunemap(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "eval_mads-tiny_b0_fusion_test"  # a new folder here, named after the checkpoint and split
    report = json.loads((out / "metrics.json").read_text())
    assert round(report["metrics"]["oa"] * 100, 2) == 72.88
    assert round(report["metrics"]["kappa"], 4) == 0.6873
    assert report["precision"] == "fp32" and report["device"] == "cpu"
    assert report["torch_version"] == __import__("torch").__version__
    assert report["checkpoint_sha256"] == hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()
    assert sorted(p.name for p in MADS.iterdir()) == before  # nothing written beside the weights

    again = _dunemap(*args, cwd=tmp_path)  # an existing report is never replaced silently
    assert again.returncode == 1 and "metrics.json: already exists; pass --overwrite" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1

    bf16 = _dunemap(*args, "--precision", "bf16", "--overwrite", cwd=tmp_path)
    assert bf16.returncode == 0, bf16.stderr
    assert "precision bf16" in bf16.stdout  # asked for, and said so
    assert json.loads((out / "metrics.json").read_text())["precision"] == "bf16"
