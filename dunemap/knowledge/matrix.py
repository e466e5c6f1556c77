"""Text matrices: the one reader of a (C, D) class-embedding .npy, row normalisation and the matrix hash."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from dunemap.errors import InputError

_UNIT_TOL = 1e-6  # |norm - 1| below which a float32 row counts as unit length already


def normalize_rows(matrix: np.ndarray, source: str) -> np.ndarray:
    """Return float32 ``matrix`` (N, D) with unit-length rows; InputError naming ``source`` for NaN/inf or zero rows."""
    m = np.asarray(matrix, dtype=np.float32)
    if m.ndim != 2 or m.shape[0] == 0 or m.shape[1] == 0:
        raise InputError(f"text embeddings {source}: expected a 2-D (classes, dim) array, got shape {m.shape}")
    if not np.isfinite(m).all():
        bad = int(np.flatnonzero(~np.isfinite(m).all(axis=1))[0])
        raise InputError(f"text embeddings {source}: row {bad} contains NaN or inf")
    norms = np.linalg.norm(m.astype(np.float64), axis=1)
    if (norms < 1e-12).any():
        raise InputError(f"text embeddings {source}: row {int(np.flatnonzero(norms < 1e-12)[0])} is all zeros")
    # Rows already unit length to float32 precision are kept bit-for-bit, so normalising is idempotent
    # and a matrix read back from a cache or checkpoint equals the one written.
    scale = np.where(np.abs(norms - 1.0) <= _UNIT_TOL, 1.0, norms).astype(np.float32)
    return np.ascontiguousarray(m / scale[:, None], dtype=np.float32)


def array_sha256(matrix: np.ndarray) -> str:
    """SHA-256 of a matrix as float32 C-order bytes, prefixed by its shape."""
    m = np.ascontiguousarray(matrix, dtype=np.float32)
    h = hashlib.sha256(repr(m.shape).encode("ascii"))
    h.update(m.tobytes())
    return h.hexdigest()


def load_text_npy(path: str | os.PathLike, num_classes: int | None = None) -> np.ndarray:
    """Read a (C, D) text-embedding .npy (any D) as float32 with unit rows; errors name the file and the problem."""
    path = Path(path)
    try:
        raw = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"text embeddings {path}: file not found") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"text embeddings {path}: not a readable .npy array ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, np.ndarray) or raw.ndim != 2:
        shape = getattr(raw, "shape", None)
        raise InputError(f"text embeddings {path}: expected a 2-D (classes, dim) array, got shape {shape}")
    if not np.issubdtype(raw.dtype, np.floating):
        raise InputError(f"text embeddings {path}: expected floating-point values, got dtype {raw.dtype}")
    if num_classes is not None and raw.shape[0] != num_classes:
        raise InputError(f"text embeddings {path}: has {raw.shape[0]} rows but {num_classes} classes are expected")
    return normalize_rows(raw, str(path))
