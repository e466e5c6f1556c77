"""Confidence calibration: one temperature fitted on held-out logits, expected calibration error, reliability.

Temperature scaling (Guo et al. 2017) divides every logit by one scalar ``T`` fitted to minimise the
negative log-likelihood of a labelled split the model was not trained on. It changes no argmax, so
classes and metrics stay as they are; only the probabilities (and the confidence raster) change.
The expected calibration error (ECE) bins pixels by their top probability and averages the gap
between mean confidence and accuracy, weighted by the share of pixels in each bin.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dunemap.errors import InputError
from dunemap.io.atomic import atomic_path

DEFAULT_BINS = 15
T_RANGE = (0.05, 20.0)  # a fitted temperature outside this range means the split is unusable, not a real fit

log = logging.getLogger(__name__)


def at_bound(temperature: float) -> bool:
    """Whether a fitted temperature was stopped at an end of :data:`T_RANGE` (no real optimum inside it)."""
    return temperature <= T_RANGE[0] or temperature >= T_RANGE[1]


@dataclass(frozen=True)
class Reliability:
    """Per-bin statistics of top-probability confidence against accuracy (bins of equal width on [0, 1])."""

    edges: np.ndarray  # (bins + 1,)
    count: np.ndarray  # (bins,) pixels per bin
    confidence: np.ndarray  # (bins,) mean top probability in the bin (nan where empty)
    accuracy: np.ndarray  # (bins,) share of correct argmax in the bin (nan where empty)

    @property
    def ece(self) -> float:
        """Expected calibration error: sum over bins of (share of pixels) x |accuracy - confidence|."""
        total = self.count.sum()
        if total == 0:
            return float("nan")
        used = self.count > 0
        gaps = np.abs(self.accuracy[used] - self.confidence[used])
        return float((self.count[used] / total * gaps).sum())


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = DEFAULT_BINS) -> Reliability:
    """Bin ``confidence`` (top probability per pixel) against ``correct`` (bool per pixel)."""
    confidence = np.asarray(confidence, dtype=np.float64).ravel()
    correct = np.asarray(correct, dtype=bool).ravel()
    if confidence.shape != correct.shape:
        raise InputError(f"{confidence.size} confidences for {correct.size} outcomes")
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    count = np.bincount(index, minlength=bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(index, weights=confidence, minlength=bins) / count
        acc = np.bincount(index, weights=correct.astype(np.float64), minlength=bins) / count
    return Reliability(edges, count, conf, acc)


class ReliabilityAccumulator:
    """Accumulate reliability bins over batches of logits, for several temperatures at once."""

    def __init__(self, temperatures: dict[str, float], bins: int = DEFAULT_BINS):
        self.temperatures = dict(temperatures)
        self.bins = bins
        self._count = {k: np.zeros(bins, np.int64) for k in temperatures}
        self._conf = {k: np.zeros(bins) for k in temperatures}
        self._acc = {k: np.zeros(bins) for k in temperatures}

    def update(self, logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> None:
        """``logits`` (B, K, H, W) and ``labels`` (B, H, W); pixels labelled ``ignore_index`` are skipped."""
        keep = labels != ignore_index
        if not bool(keep.any()):
            return
        flat = logits.permute(0, 2, 3, 1)[keep].float()  # (N, K)
        target = labels[keep]
        for key, t in self.temperatures.items():
            probs = torch.softmax(flat / t, dim=1)
            top, pred = probs.max(dim=1)
            part = reliability(top.numpy(), (pred == target).numpy(), self.bins)
            used = part.count > 0
            self._count[key] += part.count
            self._conf[key][used] += part.confidence[used] * part.count[used]
            self._acc[key][used] += part.accuracy[used] * part.count[used]

    def result(self, key: str) -> Reliability:
        count = self._count[key]
        with np.errstate(invalid="ignore", divide="ignore"):
            return Reliability(np.linspace(0.0, 1.0, self.bins + 1), count.copy(),
                               self._conf[key] / count, self._acc[key] / count)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, iterations: int = 100) -> float:
    """The temperature minimising the mean NLL of ``labels`` (N,) under ``softmax(logits / T)`` (N, K).

    Optimised over ``log T`` with L-BFGS (a smooth, one-dimensional, convex-in-practice problem).
    """
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise InputError(f"expected logits (N, K) and labels (N,), got {tuple(logits.shape)} and {tuple(labels.shape)}")
    if logits.shape[0] == 0:
        raise InputError("no labelled pixels to fit a temperature on")
    if not bool(torch.isfinite(logits).all()):
        raise InputError("non-finite logits: the model is broken, no temperature can be fitted")
    logits = logits.detach().double()
    labels = labels.detach().long()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=iterations, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    t = float(np.clip(float(log_t.detach().exp()), *T_RANGE))
    if at_bound(t):
        log.warning("the fitted temperature stopped at its bound T = %.3f (allowed %g..%g): the predictions carry "
                    "no usable confidence on this split (too few pixels, or a model no better than chance there); "
                    "the calibration is not a real fit", t, *T_RANGE)
    return t


def plot_reliability(curves: dict[str, Reliability], out: Path, title: str = "Reliability") -> Path:
    """Reliability diagram: accuracy against mean confidence per bin, one line per curve, ECE in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfect calibration")
    for name, rel in curves.items():
        used = rel.count > 0
        ax.plot(rel.confidence[used], rel.accuracy[used], marker="o", markersize=3, label=f"{name} (ECE {rel.ece:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return Path(out)


__all__ = ["DEFAULT_BINS", "Reliability", "ReliabilityAccumulator", "fit_temperature", "plot_reliability", "reliability"]
