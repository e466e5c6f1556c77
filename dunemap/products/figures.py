"""Figures of an evaluation: the confusion matrix as a PNG (matplotlib, drawn without a display)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dunemap.errors import InputError
from dunemap.io.atomic import atomic_path
from dunemap.metrics import check_class_names, safe_ratio
from dunemap.registry import choose


def _normalize_rows(m: np.ndarray) -> np.ndarray:
    return safe_ratio(m, m.sum(axis=1, keepdims=True).repeat(m.shape[1], axis=1))


def _normalize_cols(m: np.ndarray) -> np.ndarray:
    return safe_ratio(m, m.sum(axis=0, keepdims=True).repeat(m.shape[0], axis=0))


def _normalize_all(m: np.ndarray) -> np.ndarray:
    return safe_ratio(m, np.full(m.shape, m.sum()))


NORMALIZATIONS = {
    "true": _normalize_rows,  # each truth row sums to 1 (recall on the diagonal)
    "pred": _normalize_cols,  # each prediction column sums to 1 (precision on the diagonal)
    "all": _normalize_all,  # the whole matrix sums to 1
    "none": lambda m: m.astype(np.float64),  # raw counts
}
"""How :func:`plot_confusion_matrix` scales the colours; keys follow scikit-learn's ``normalize``."""

_ANNOTATE_MAX_CLASSES = 20  # beyond this, cell text becomes illegible


def _compact(n: int) -> str:
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def plot_confusion_matrix(
    matrix: np.ndarray,
    class_names: Sequence[str] | None,
    path: str | Path,
    normalize: str = "true",
    split: str | None = None,
) -> Path:
    """Draw the confusion matrix as a PNG at ``path`` (written atomically) and return the path.

    Colours show the matrix normalised as ``normalize`` says (``true``: by truth row, ``pred``: by
    predicted column, ``all``, ``none``); with at most 20 classes each cell is annotated with its
    normalised value and its pixel count. ``split`` (e.g. ``test``) is named in the title, which is
    also stored as the PNG's ``Title`` text.
    """
    from matplotlib.figure import Figure

    scale = choose(NORMALIZATIONS, normalize, "normalization")
    counts = np.asarray(matrix)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise InputError(f"confusion matrix has shape {counts.shape}; expected square (K, K)")
    k = counts.shape[0]
    names = check_class_names(class_names, k)
    values = scale(counts.astype(np.float64))
    vmax = 1.0 if normalize != "none" else max(float(values.max()), 1.0)

    side = max(4.0, 0.55 * k + 2.5)
    fig = Figure(figsize=(side + 1.0, side), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(k), labels=names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(k), labels=names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    title = {"true": "row-normalised", "pred": "column-normalised", "all": "normalised", "none": "counts"}[normalize]
    heading = f"confusion matrix{f', {split} split' if split else ''} ({title}, {_compact(int(counts.sum()))} px)"
    ax.set_title(heading)
    if k <= _ANNOTATE_MAX_CLASSES:
        fontsize = 8 if k <= 10 else 6
        for t in range(k):
            for p in range(k):
                c = int(counts[t, p])
                text = _compact(c) if normalize == "none" else f"{values[t, p]:.2f}\n{_compact(c)}"
                colour = "white" if values[t, p] > 0.6 * vmax else "black"
                ax.text(p, t, text, ha="center", va="center", fontsize=fontsize, color=colour)
    target = Path(path)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", metadata={"Title": heading})
    return target
