"""Semantic-segmentation metrics from an accumulated confusion matrix: OA, mIoU, Cohen's kappa, mF1, per-class scores.

Conventions (rows of the matrix are truth, columns prediction; pixels whose truth is ``ignore_index``
are dropped):

* A class is *present* when it occurs in the truth or in the prediction.
* A class absent from both has no defined score: its per-class IoU, precision, recall and F1 are NaN
  and it is left out of mIoU and mF1.
* A class present in only one of them counts fully: its IoU and F1 are 0 (it was entirely missed, or
  predicted where it does not occur); precision with no predicted pixel and recall with no true pixel
  are 0, as scikit-learn's ``zero_division=0``.
* Kappa is Cohen's kappa ``(p_o - p_e) / (1 - p_e)`` from the matrix; it is NaN when ``p_e == 1``
  (a single class in both truth and prediction) and every score is NaN when no pixel was counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dunemap.errors import InputError


def _to_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _ids_text(ids: np.ndarray, limit: int = 10) -> str:
    shown = ", ".join(str(int(i)) for i in ids[:limit])
    return shown + (f" ... ({len(ids)} distinct)" if len(ids) > limit else "")


class ConfusionMatrix:
    """A (K, K) int64 pixel confusion matrix accumulated batch by batch; rows are truth, columns prediction.

    Args:
        num_classes: K, the number of classes; ids run 0..K-1.
        ignore_index: truth value whose pixels are not counted (255 by default).
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255) -> None:
        if num_classes < 1:
            raise InputError(f"num_classes={num_classes}; expected at least 1")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    @property
    def matrix(self) -> np.ndarray:
        """A copy of the accumulated (K, K) int64 matrix: ``matrix[t, p]`` counts truth t predicted as p."""
        return self._matrix.copy()

    @property
    def n_pixels(self) -> int:
        return int(self._matrix.sum())

    def reset(self) -> None:
        """Zero the matrix."""
        self._matrix[:] = 0

    def update(self, pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> None:
        """Count a batch of predicted and true class ids (same shape, any number of dimensions).

        Pixels whose target is ``ignore_index`` are dropped. A target id outside ``[0, K)`` other than
        ``ignore_index``, or a prediction outside ``[0, K)`` at a counted pixel, raises InputError.
        """
        p = _to_numpy(pred)
        t = _to_numpy(target)
        if p.shape != t.shape:
            raise InputError(f"prediction shape {p.shape} differs from target shape {t.shape}")
        for arr, what in ((p, "prediction"), (t, "target")):
            if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
                raise InputError(f"{what} dtype is {arr.dtype}; expected integer class ids")
        t = t.ravel()
        p = p.ravel()
        if self.ignore_index is not None:
            keep = t != self.ignore_index
            t, p = t[keep], p[keep]
        k = self.num_classes
        t = t.astype(np.int64, copy=False)
        p = p.astype(np.int64, copy=False)
        bad_t = (t < 0) | (t >= k)
        if bad_t.any():
            raise InputError(
                f"target holds class id(s) {_ids_text(np.unique(t[bad_t]))} outside [0, {k}) "
                f"and not the ignore index {self.ignore_index}"
            )
        bad_p = (p < 0) | (p >= k)
        if bad_p.any():
            raise InputError(
                f"prediction holds class id(s) {_ids_text(np.unique(p[bad_p]))} outside [0, {k}) at counted pixels"
            )
        self._matrix += np.bincount(t * k + p, minlength=k * k).reshape(k, k)

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add ``other``'s counts into this matrix (e.g. from another worker) and return self."""
        if not isinstance(other, ConfusionMatrix):
            raise TypeError(f"cannot merge {type(other).__name__} into ConfusionMatrix")
        if other.num_classes != self.num_classes or other.ignore_index != self.ignore_index:
            raise InputError(
                f"cannot merge a {other.num_classes}-class matrix (ignore {other.ignore_index}) into a "
                f"{self.num_classes}-class one (ignore {self.ignore_index})"
            )
        self._matrix += other._matrix
        return self

    def __iadd__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        return self.merge(other)

    def compute(self) -> SegmentationMetrics:
        """The metrics of the accumulated matrix (see the module docstring for the rules)."""
        return metrics_from_matrix(self._matrix)

    def __repr__(self) -> str:
        return (
            f"ConfusionMatrix(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"n_pixels={self.n_pixels})"
        )


@dataclass
class SegmentationMetrics:
    """Scores of one confusion matrix. Per-class arrays have length K and hold NaN for classes not present."""

    oa: float  # overall accuracy: correctly classified pixels / counted pixels
    miou: float  # mean IoU over present classes
    kappa: float  # Cohen's kappa
    mf1: float  # mean F1 over present classes
    per_class_iou: np.ndarray  # (K,) float64
    per_class_precision: np.ndarray  # (K,) float64
    per_class_recall: np.ndarray  # (K,) float64
    per_class_f1: np.ndarray  # (K,) float64
    present: np.ndarray  # (K,) bool: the class occurs in truth or prediction
    support: np.ndarray  # (K,) int64: true pixels per class
    n_pixels: int  # counted pixels
    matrix: np.ndarray  # (K, K) int64, rows truth, columns prediction

    @property
    def num_classes(self) -> int:
        return len(self.present)

    def to_dict(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """A JSON-serialisable dict (NaN becomes None); ``class_names`` keys the per-class entries."""
        names = check_class_names(class_names, self.num_classes)
        per_class = {
            name: {
                "iou": _num(self.per_class_iou[i]),
                "precision": _num(self.per_class_precision[i]),
                "recall": _num(self.per_class_recall[i]),
                "f1": _num(self.per_class_f1[i]),
                "present": bool(self.present[i]),
                "support": int(self.support[i]),
            }
            for i, name in enumerate(names)
        }
        return {
            "oa": _num(self.oa),
            "miou": _num(self.miou),
            "kappa": _num(self.kappa),
            "mf1": _num(self.mf1),
            "n_pixels": int(self.n_pixels),
            "class_names": list(names),
            "per_class": per_class,
            "confusion_matrix": self.matrix.astype(np.int64).tolist(),
        }


def _num(x: float) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def check_class_names(class_names: Sequence[str] | None, k: int) -> list[str]:
    if class_names is None:
        return [str(i) for i in range(k)]
    names = [str(n) for n in class_names]
    if len(names) != k:
        raise InputError(f"{len(names)} class names given for {k} classes: {names}")
    if len(set(names)) != len(names):
        raise InputError(f"class names are not unique: {names}")
    return names


def safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den == 0 (no warnings)."""
    out = np.zeros(num.shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def metrics_from_matrix(matrix: np.ndarray) -> SegmentationMetrics:
    """Compute :class:`SegmentationMetrics` from a (K, K) count matrix (rows truth, columns prediction)."""
    m = np.asarray(matrix)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise InputError(f"confusion matrix has shape {m.shape}; expected square (K, K)")
    if (m < 0).any():
        raise InputError("confusion matrix holds negative counts")
    counts = m.astype(np.int64)
    mf = counts.astype(np.float64)
    n = float(mf.sum())
    tp = np.diag(mf)
    truth = mf.sum(axis=1)  # (K,) true pixels per class
    predicted = mf.sum(axis=0)  # (K,) predicted pixels per class
    present = (truth + predicted) > 0
    fp = predicted - tp
    fn = truth - tp

    iou = safe_ratio(tp, tp + fp + fn)
    precision = safe_ratio(tp, predicted)
    recall = safe_ratio(tp, truth)
    f1 = safe_ratio(2 * tp, 2 * tp + fp + fn)
    for arr in (iou, precision, recall, f1):
        arr[~present] = np.nan

    if n > 0:
        oa = float(tp.sum() / n)
        miou = float(iou[present].mean())
        mf1 = float(f1[present].mean())
        pe = float((truth * predicted).sum() / (n * n))
        kappa = float((oa - pe) / (1.0 - pe)) if pe < 1.0 else math.nan
    else:
        oa = miou = mf1 = kappa = math.nan
    return SegmentationMetrics(
        oa=oa,
        miou=miou,
        kappa=kappa,
        mf1=mf1,
        per_class_iou=iou,
        per_class_precision=precision,
        per_class_recall=recall,
        per_class_f1=f1,
        present=present,
        support=counts.sum(axis=1),
        n_pixels=int(counts.sum()),
        matrix=counts,
    )


def _fmt(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.4f}"


def format_table(metrics: SegmentationMetrics, class_names: Sequence[str] | None = None) -> str:
    """An aligned plain-text table: one row per class (IoU, precision, recall, F1, support) and a summary line.

    Classes absent from truth and prediction show ``-``.
    """
    names = check_class_names(class_names, metrics.num_classes)
    header = ["class", "IoU", "precision", "recall", "F1", "support"]
    rows = [
        [
            name,
            _fmt(metrics.per_class_iou[i]),
            _fmt(metrics.per_class_precision[i]),
            _fmt(metrics.per_class_recall[i]),
            _fmt(metrics.per_class_f1[i]),
            str(int(metrics.support[i])),
        ]
        for i, name in enumerate(names)
    ]
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(w) for cell, w in zip(cells[1:], widths[1:]))
        return "  ".join([first, *rest]).rstrip()

    rule = "-" * len(line(header))
    summary = (
        f"OA {_fmt(metrics.oa)}  mIoU {_fmt(metrics.miou)}  kappa {_fmt(metrics.kappa)}  "
        f"mF1 {_fmt(metrics.mf1)}  classes {int(metrics.present.sum())}/{metrics.num_classes}  "
        f"pixels {metrics.n_pixels}"
    )
    return "\n".join([line(header), rule, *(line(r) for r in rows), rule, summary])
