"""What end-to-end tests recompute themselves instead of trusting the program: file hashes and map scores.

Importable from any test folder (``tests/`` is on the path through its conftest.py).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, cohen_kappa_score, confusion_matrix, jaccard_score


def hashes(*roots: Path) -> dict[Path, str]:
    """sha256 of every regular file under ``roots`` (a file: itself; symlinks not followed)."""
    out = {}
    for root in roots:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
        for p in files:
            out[p] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def sklearn_scores(pred: np.ndarray, truth: np.ndarray, num_classes: int, ignore: int = 255) -> dict:
    """OA, mIoU (over the classes in the truth or the prediction), Kappa and the (K, K) confusion matrix
    (rows truth) of class ids ``pred`` against ``truth`` where the truth is not ``ignore``, by scikit-learn."""
    keep = np.asarray(truth) != ignore
    t, p = np.asarray(truth)[keep].ravel(), np.asarray(pred)[keep].ravel()
    present = np.union1d(t, p)
    return {"oa": float(accuracy_score(t, p)),
            "miou": float(jaccard_score(t, p, labels=present, average=None).mean()),
            "kappa": float(cohen_kappa_score(t, p)),
            "confusion_matrix": confusion_matrix(t, p, labels=np.arange(num_classes))}
