"""Training really learns, writes its artefacts atomically, and resumes to the same weights."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dunemap.errors import ConfigError
from dunemap.models.checkpoint import load_checkpoint
from dunemap.training import TrainConfig, train
from dunemap.training.objective import class_loss_weights, ignore_margin, poly_factor, warmup_factor


def _config(data: Path, save: Path, **kw) -> TrainConfig:
    """The tests' run. No end-of-run calibration unless a test asks for it: it changes no weights nor history, and
    tests/trust/test_trust_cli.py and tests/cli/test_cli_train_calibration_kill.py test it."""
    base = dict(model="mit_tiny", in_channels=16, epochs=6, batch_size=4, lr=5e-3, text="random", precision="fp32",
                device="cpu", progress=False, seed=3, catalog=data / "catalog.yaml", calibrate=False)
    base.update(kw)
    return TrainConfig(data_root=data, save_dir=save, **base)


def test_tiny_model_learns(tiny_dataset: Path, tmp_path: Path) -> None:
    result = train(_config(tiny_dataset, tmp_path / "run", epochs=20))
    assert result.history[-1]["train_miou"] >= 0.9, result.history[-1]
    assert result.best_val_miou >= 0.8
    saved = {p.name for p in (tmp_path / "run").iterdir()}
    assert saved == {"best_model.pth", "last.pth", "metrics.csv", "metrics.json", "config.yaml"}
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [row["epoch"] for row in history] == list(range(1, 21))
    # linear (poly power 1) decay per epoch from the base LR
    assert [round(row["lr"], 8) for row in history[:3]] == [round(5e-3 * poly_factor(e, 20, 1.0), 8) for e in range(3)]
    best = load_checkpoint(result.best_checkpoint)
    assert best.metrics["epoch"] == result.best_epoch
    assert best.text_source["mode"] == "random" and best.config.in_channels == 16


def test_best_checkpoint_is_the_epoch_of_highest_val_miou_not_the_last(make_tiny_dataset, tmp_path: Path) -> None:
    """Epochs 1-2 validate on the true labels; then the val labels are permuted and the run resumed, so epochs
    3-5, fitting the training labels better, score far worse. The best epoch is then 1 or 2 (which one depends
    on the machine's rounding): the argmax of the recorded history, never the last, and best_model.pth holds
    exactly that epoch's weights (kept from the run's own last.pth after each of the first two epochs)."""
    data = make_tiny_dataset(tmp_path / "data", n_train=8, n_val=2, n_test=0)
    run = tmp_path / "run"
    snapshots = {}
    for epoch in (1, 2):
        train(_config(data, run, epochs=5, stop_after_epochs=1, resume=epoch > 1))
        snapshots[epoch] = load_checkpoint(run / "last.pth").model.state_dict()
    for png in (data / "ann_dir" / "val").glob("*.png"):
        labels = np.asarray(Image.open(png))
        Image.fromarray(((labels + 1) % 4).astype(np.uint8)).save(png)  # every val pixel now names another blob
    result = train(_config(data, run, epochs=5, resume=True))

    history = json.loads((run / "metrics.json").read_text())
    with open(run / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in history] == [1, 2, 3, 4, 5] and [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5]
    val = [r["val_miou"] for r in history]
    assert [float(r["val_miou"]) for r in rows] == pytest.approx(val)
    assert max(val[2:]) < min(val[:2]) - 0.05, val  # the construction holds: the later epochs are clearly worse
    best_epoch = int(np.argmax(val)) + 1
    assert result.best_epoch == best_epoch and result.best_val_miou == pytest.approx(max(val))

    best = load_checkpoint(run / "best_model.pth")
    assert best.metrics["epoch"] == best_epoch and best.metrics["val"]["miou"] == pytest.approx(val[best_epoch - 1])
    weights = best.model.state_dict()
    assert all(torch.equal(weights[k], snapshots[best_epoch][k]) for k in weights)  # that epoch's weights, exactly
    other = snapshots[3 - best_epoch]
    assert any(not torch.equal(weights[k], other[k]) for k in other if other[k].is_floating_point())


def test_resume_gives_the_same_final_weights(tiny_dataset: Path, tmp_path: Path) -> None:
    full = train(_config(tiny_dataset, tmp_path / "full", epochs=4))
    part = train(_config(tiny_dataset, tmp_path / "part", epochs=4, stop_after_epochs=2))
    assert len(part.history) == 2
    resumed = train(_config(tiny_dataset, tmp_path / "part", epochs=4, resume=True))
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    a = load_checkpoint(full.last_checkpoint).model.state_dict()
    b = load_checkpoint(resumed.last_checkpoint).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["lr"] for r in resumed.history] == [r["lr"] for r in full.history]


def test_weight_average_is_what_is_validated_kept_and_resumed(tiny_dataset: Path, tmp_path: Path) -> None:
    full = train(_config(tiny_dataset, tmp_path / "full", epochs=3, ema_decay=0.9))
    part = train(_config(tiny_dataset, tmp_path / "part", epochs=3, ema_decay=0.9, stop_after_epochs=1))
    assert len(part.history) == 1
    # after its one epoch the part run's best is its last epoch (comparable); read before the resume replaces them
    state = torch.load(part.last_checkpoint, map_location="cpu", weights_only=False)["train_state"]["ema"]
    average = {k.removeprefix("module."): v for k, v in state.items() if k != "n_averaged"}
    assert int(state["n_averaged"]) > 1
    raw = load_checkpoint(part.last_checkpoint).model.state_dict()
    best = load_checkpoint(part.best_checkpoint).model.state_dict()
    assert any(not torch.equal(raw[k], average[k]) for k in raw if raw[k].is_floating_point())
    assert all(torch.equal(best[k], average[k]) for k in best)  # best_model.pth holds the average
    resumed = train(_config(tiny_dataset, tmp_path / "part", epochs=3, ema_decay=0.9, resume=True))
    assert resumed.history == full.history  # the average's validation scores too: resuming restored it exactly
    with pytest.raises(ConfigError, match="--ema-decay"):
        train(_config(tiny_dataset, tmp_path / "bad", ema_decay=1.0))
    train(_config(tiny_dataset, tmp_path / "plain", epochs=2, stop_after_epochs=1))
    with pytest.raises(ConfigError, match=r"--ema-decay 0.9 \(saved run: 0.0\)"):
        train(_config(tiny_dataset, tmp_path / "plain", epochs=2, ema_decay=0.9, resume=True))


def test_warmup_raises_the_rate_over_the_first_steps_and_resumes(tiny_dataset: Path, tmp_path: Path) -> None:
    assert [warmup_factor(s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0
    # 2 steps per epoch (capped), warm-up over 3: epoch 1 ends at 2/3 of its rate, epoch 2 at all of it
    kw = dict(epochs=3, batch_size=2, max_steps_per_epoch=2, warmup_steps=3)
    full = train(_config(tiny_dataset, tmp_path / "full", **kw))
    lrs = [r["lr"] for r in full.history]
    assert lrs[0] == pytest.approx(5e-3 * 2 / 3) and lrs[1] == pytest.approx(5e-3 * poly_factor(1, 3, 1.0))
    part = train(_config(tiny_dataset, tmp_path / "part", stop_after_epochs=1, **kw))
    resumed = train(_config(tiny_dataset, tmp_path / "part", resume=True, **kw))
    assert len(part.history) == 1 and resumed.history == full.history
    with pytest.raises(ConfigError, match="--warmup-steps -1 must be at least 0"):
        train(_config(tiny_dataset, tmp_path / "bad", warmup_steps=-1))


def test_loss_margin_leaves_the_tile_rim_out_of_the_loss(tiny_dataset: Path, tmp_path: Path) -> None:
    y = torch.arange(2 * 6 * 8).reshape(2, 6, 8) % 10
    out = ignore_margin(y, 2)
    assert (out[:, 2:4, 2:6] == y[:, 2:4, 2:6]).all() and int((out != 255).sum()) == 2 * 2 * 4
    assert (out[:, :2] == 255).all() and (out[:, :, -2:] == 255).all() and ignore_margin(y, 0) is y
    with pytest.raises(ConfigError, match="--loss-margin 3 leaves no pixel of a 6x8 tile"):
        ignore_margin(y, 3)
    result = train(_config(tiny_dataset, tmp_path / "rim", epochs=2, loss_margin=4))
    plain = train(_config(tiny_dataset, tmp_path / "plain", epochs=2))
    assert np.isfinite(result.history[-1]["train_loss"]) and result.history != plain.history
    with pytest.raises(ConfigError, match="--loss-margin -1"):
        train(_config(tiny_dataset, tmp_path / "bad", loss_margin=-1))


def test_plain_segformer_and_bf16_train_a_step(tiny_dataset: Path, tmp_path: Path) -> None:
    result = train(_config(tiny_dataset, tmp_path / "plain", epochs=1, text="none", precision="bf16", calibrate=True))
    loaded = load_checkpoint(result.last_checkpoint)
    assert loaded.config.fusion == "none" and not hasattr(loaded.model, "alignment_module")


def test_balanced_class_weights_lift_rare_classes_and_keep_the_loss_scale() -> None:
    assert class_loss_weights(np.array([900, 100, 0]), "none") is None
    w = class_loss_weights(np.array([900, 100, 0]), "balanced").numpy()
    assert np.isclose(w[1] / w[0], 3.0)  # share ratio 9 -> weight ratio sqrt(9)
    assert np.isclose(w[0] * 0.9 + w[1] * 0.1, 1.0)  # pixel-weighted mean 1
    assert w[2] == w.max()  # a class absent from training gets the largest present weight
    with pytest.raises(ConfigError, match="class-weights"):
        class_loss_weights(np.array([1, 1]), "inverse")


def test_unet_baseline_trains_through_the_same_loop(tiny_dataset: Path, tmp_path: Path) -> None:
    result = train(_config(tiny_dataset, tmp_path / "unet", model="unet", epochs=1, text="none",
                           class_weights="balanced", model_overrides={"base_width": 8, "depth": 2}, calibrate=True))
    loaded = load_checkpoint(result.last_checkpoint)
    assert loaded.config.family == "unet" and loaded.config.base_width == 8
