"""The pieces of the training objective and schedule: class weights, the loss margin, the weight average and the
learning-rate factors (poly decay per epoch, linear warm-up per step)."""

from __future__ import annotations

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from dunemap.data.seed_layout import IGNORE_INDEX
from dunemap.errors import ConfigError
from dunemap.training.config import CLASS_WEIGHTS


def poly_factor(epoch: int, epochs: int, power: float) -> float:
    """Learning-rate multiplier at ``epoch`` of ``epochs`` under poly decay (power 1 = linear to zero)."""
    return max(0.0, 1.0 - epoch / epochs) ** power


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Multiplier of the epoch's learning rate at global optimiser ``step`` (0-based): linear up to 1."""
    return 1.0 if step >= warmup_steps else (step + 1) / warmup_steps


def class_loss_weights(counts: np.ndarray, mode: str) -> torch.Tensor | None:
    """Cross-entropy class weights: None for ``none``; for ``balanced`` each class's pixel share to the power -0.5.

    The inverse square root (not the inverse) of the share lifts rare classes without letting a class
    of a few pixels dominate; weights are scaled to a pixel-weighted mean of 1, so the loss keeps its
    size, and classes absent from the training tiles get the largest present weight.
    """
    if mode not in CLASS_WEIGHTS:
        raise ConfigError(f"--class-weights {mode!r}; expected one of {', '.join(CLASS_WEIGHTS)}")
    if mode == "none":
        return None
    counts = np.asarray(counts, dtype=np.float64)
    if counts.sum() <= 0:
        raise ConfigError("--class-weights balanced: the training tiles hold no labelled pixel")
    share = counts / counts.sum()
    present = share > 0
    w = np.zeros_like(share)
    w[present] = share[present] ** -0.5
    w /= float((w * share).sum())
    w[~present] = w[present].max()
    return torch.tensor(w, dtype=torch.float32)


def ignore_margin(y: torch.Tensor, margin: int) -> torch.Tensor:
    """``y`` (B, H, W) with the ``margin`` pixels along every edge set to the ignore index (a copy; ``y`` if 0).

    A pixel near a tile's edge is seen with context on one side only; where its label depends on what
    lies beyond the edge (a dune field's bare corridors), the loss there teaches guessing from the look
    of the pixel. Leaving the rim out of the loss trains on the pixels the window can explain, as the
    overlap-tile strategy of U-Net (Ronneberger et al. 2015) does.
    """
    if margin == 0:
        return y
    if 2 * margin >= min(y.shape[-2:]):
        raise ConfigError(f"--loss-margin {margin} leaves no pixel of a {y.shape[-2]}x{y.shape[-1]} tile in the loss")
    out = torch.full_like(y, IGNORE_INDEX)
    out[..., margin:-margin, margin:-margin] = y[..., margin:-margin, margin:-margin]
    return out


def weight_average(model: torch.nn.Module, decay: float) -> AveragedModel | None:
    """An exponential moving average of ``model``'s weights and buffers (None when ``decay`` is 0).

    Updated after every optimiser step as ``avg = decay * avg + (1 - decay) * weights``; BatchNorm
    statistics are averaged the same way, so the average is a complete model to validate and keep.
    Averaging the iterates of the last few hundred steps lands in a flatter part of the loss surface
    than the last iterate (Polyak & Juditsky 1992; Izmailov et al. 2018).
    """
    if decay == 0:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
