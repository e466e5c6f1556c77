"""Predictions over a dataset: the one loop that runs a :class:`~dunemap.runtime.predictor.Predictor` over a
DataLoader, and the confusion matrix built on it (evaluation, training's validation, the quality benchmark)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from dunemap.data.seed_layout import IGNORE_INDEX
from dunemap.io.progress import progress_bar
from dunemap.metrics import ConfusionMatrix
from dunemap.runtime.predictor import Predictor


def predict_over(
    predictor: Predictor,
    loader: DataLoader,
    *,
    dissimilarity: bool = False,
    progress: bool = False,
    desc: str = "predict",
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """The model's own (uncalibrated) logits of every batch of ``loader`` with its labels, and with
    ``dissimilarity`` the DI map (CPU) of the predictor's area of applicability (else None)."""
    predictor.model.eval()
    for x, y in progress_bar(loader, enabled=progress, desc=desc, leave=False):
        if dissimilarity:
            logits, di = predictor.forward_with_dissimilarity(x)
        else:
            logits, di = predictor.forward(x), None
        yield logits, y, di


def confusion_over(
    predictor: Predictor,
    loader: DataLoader,
    num_classes: int | None = None,
    *,
    progress: bool = False,
    desc: str = "val",
) -> np.ndarray:
    """The (K, K) confusion matrix of ``predictor``'s classes over ``loader`` (labels 255 ignored).

    Distributed callers sum it over ranks (``dunemap.training.distributed.all_reduce_sum``).
    """
    cm = ConfusionMatrix(num_classes or predictor.num_classes, IGNORE_INDEX)
    for logits, y, _ in predict_over(predictor, loader, progress=progress, desc=desc):
        cm.update(logits.argmax(1).cpu(), y)
    return cm.matrix


__all__ = ["confusion_over", "predict_over"]
