"""Training stores a temperature and an area of applicability; ``dunemap calibrate`` gives them to a MADS file."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dunemap.data.seed_layout import write_sample
from dunemap.models.checkpoint import Predictor, load_checkpoint
from dunemap.training import TrainConfig, train
from dunemap.trust.applicability import Applicability


def _dunemap(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dunemap", *map(str, args)], capture_output=True, text=True)


def test_training_stores_calibration_and_applicability(tiny_dataset: Path, tmp_path: Path, make_tiny_tile) -> None:
    config = TrainConfig(data_root=tiny_dataset, save_dir=tmp_path / "run", model="mit_tiny", in_channels=16,
                         epochs=3, batch_size=4, lr=5e-3, text="random", precision="fp32", device="cpu",
                         progress=False, seed=3, catalog=tiny_dataset / "catalog.yaml")
    result = train(config)
    best = load_checkpoint(result.best_checkpoint)
    cal = best.calibration
    assert cal["split"] == "val" and cal["pixels"] == 2 * 64 * 64
    assert 0.05 <= best.temperature <= 20 and 0 <= cal["ece_after"] <= 1
    aoa = Applicability.from_dict(best.applicability)
    assert aoa.samples.shape[0] <= 16 * 256 and aoa.threshold > 0
    assert aoa.feature_dim == best.config.decoder_dim
    assert load_checkpoint(result.last_checkpoint).calibration == {}  # only the finished best is calibrated

    # familiar ground (new tiles of the training distribution) inside, unfamiliar ground outside
    predictor = Predictor(best, precision="fp32")
    rng = np.random.default_rng(11)
    familiar = np.stack([make_tiny_tile(rng)[0] for _ in range(2)])  # (2, 16, 64, 64)
    # unfamiliar: the same landforms with other spectral signatures (another sand colour)
    labels = np.stack([make_tiny_tile(rng)[1] for _ in range(2)])  # (2, 64, 64)
    other = np.random.default_rng(999).standard_normal((4, 16))
    strange = other[labels].transpose(0, 3, 1, 2) + 0.2 * rng.standard_normal((2, 16, 64, 64))
    strange = (strange / np.linalg.norm(strange, axis=1, keepdims=True)).astype(np.float32)
    logits, di = predictor.predict_with_dissimilarity(torch.from_numpy(familiar))
    assert di.shape == (2, 64, 64) and logits.shape == (2, 4, 64, 64)
    assert torch.allclose(logits, predictor.predict(torch.from_numpy(familiar)))
    assert float((di <= aoa.threshold).float().mean()) > 0.9
    _, di_strange = predictor.predict_with_dissimilarity(torch.from_numpy(strange))
    assert float((di_strange > aoa.threshold).float().mean()) > 0.9


def _mads_dataset(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 2)):
        for i in range(n):
            x = rng.standard_normal((64, 64, 64)).astype(np.float32)
            x /= np.linalg.norm(x, axis=0, keepdims=True)
            label = rng.integers(0, 10, (64, 64)).astype(np.uint8)
            label[:8] = 255
            write_sample(root, split, f"{split}_{i}", x, label)
    return root


def test_calibrate_cli_on_a_published_state_dict(mads_dir: Path, tmp_path: Path) -> None:
    data = _mads_dataset(tmp_path / "data")
    weights, text = mads_dir / "tiny_b0_fusion.pth", mads_dir / "text_embeds_detailed.npy"
    before = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert load_checkpoint(weights, text_embeddings=np.load(text)).calibration == {}
    out = tmp_path / "calibrated.pth"
    proc = _dunemap("calibrate", "--weights", weights, "--text-embeddings", text, "--data-root", data, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "temperature" in proc.stdout and "ECE" in proc.stdout
    loaded = load_checkpoint(out)  # self-describing now: no --text-embeddings needed
    assert loaded.calibration["pixels"] == 2 * 56 * 64 and loaded.applicability is not None
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == before

    again = _dunemap("calibrate", "--weights", weights, "--text-embeddings", text, "--data-root", data, "--out", out)
    assert again.returncode == 1 and "--overwrite" in again.stderr and "Traceback" not in again.stderr
    onto = _dunemap("calibrate", "--weights", out, "--data-root", data, "--out", out, "--overwrite")
    assert onto.returncode == 1 and "would overwrite the input" in onto.stderr


@pytest.mark.parametrize("split", ["none"])
def test_calibrate_without_applicability(mads_dir: Path, tmp_path: Path, split: str) -> None:
    data = _mads_dataset(tmp_path / "data")
    out = tmp_path / "cal.pth"
    proc = _dunemap("calibrate", "--weights", mads_dir / "tiny_b0_fusion.pth", "--text-embeddings",
                    mads_dir / "text_embeds_detailed.npy", "--data-root", data, "--out", out,
                    "--applicability-split", split)
    assert proc.returncode == 0, proc.stderr
    assert load_checkpoint(out).applicability is None
