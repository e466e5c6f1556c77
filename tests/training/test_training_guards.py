"""Training guards: a diverged loss stops the run naming epoch and step; non-finite weights are never saved or loaded."""

from __future__ import annotations

import pytest
import torch

from dunemap.errors import CheckpointError, ConfigError
from dunemap.models import create_model
from dunemap.models.checkpoint import load_checkpoint, save_checkpoint
from dunemap.training.config import TrainConfig
from dunemap.training.loop import MAX_NONFINITE_STEPS, TrainingDivergedError, _guard_loss, check_train_options


def test_nonfinite_losses_are_skipped_then_stop_the_run():
    streak = 0
    for step in range(MAX_NONFINITE_STEPS - 1):
        streak = _guard_loss(torch.tensor(float("nan")), streak, epoch=4, step=step)
        assert streak == step + 1
    streak = _guard_loss(torch.tensor(0.7), streak, 4, 9)
    assert streak == 0  # a finite loss resets the count
    for step in range(MAX_NONFINITE_STEPS - 1):
        streak = _guard_loss(torch.tensor(float("inf")), streak, 4, 10 + step)
    with pytest.raises(TrainingDivergedError, match=r"epoch 5 step 13"):
        _guard_loss(torch.tensor(float("-inf")), streak, 4, 12)


@pytest.mark.parametrize(("field", "value", "flag"), [("lr", -1e-3, "--lr"), ("lr", float("nan"), "--lr"),
                                                      ("lr", 0.0, "--lr"), ("weight_decay", float("inf"), "--weight-decay"),
                                                      ("num_workers", -1, "--num-workers"),
                                                      ("stop_after_epochs", 0, "--stop-after-epochs")])
def test_options_that_cannot_train_are_refused(tmp_path, field, value, flag):
    config = TrainConfig(data_root=tmp_path, save_dir=tmp_path / "run", **{field: value})
    with pytest.raises(ConfigError, match=flag):
        check_train_options(config)


def test_checkpoint_with_nonfinite_weights_is_never_written_nor_loaded(tmp_path):
    model = create_model("mit_tiny", num_classes=2, text_dim=8)
    model.set_text(torch.nn.functional.normalize(torch.randn(2, 8), dim=1))
    good = save_checkpoint(tmp_path / "good.pth", model, ["a", "b"], [(0, 0, 0), (9, 9, 9)])
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(CheckpointError, match="refusing to save.*not finite"):
        save_checkpoint(tmp_path / "bad.pth", model, ["a", "b"], [(0, 0, 0), (9, 9, 9)])
    assert not (tmp_path / "bad.pth").exists()
    obj = torch.load(good, weights_only=True)
    obj["state_dict"][next(iter(obj["state_dict"]))].fill_(float("inf"))
    torch.save(obj, tmp_path / "planted.pth")
    with pytest.raises(CheckpointError, match=r"planted\.pth: unusable checkpoint.*not finite"):
        load_checkpoint(tmp_path / "planted.pth")
