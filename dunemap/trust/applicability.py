"""Area of applicability: where a map rests on ground like the training data (Meyer & Pebesma 2021).

The training data are described by a bounded sample of the model's own per-pixel features
(standardised and reduced by PCA). The *dissimilarity index* (DI) of a pixel is the distance to
its nearest training sample divided by the mean distance between training samples. The threshold
comes from the training data alone: each training sample's DI to the samples of the *other*
cross-validation folds (folds are whole tiles or scenes, so a sample is never compared with its
own neighbours), and the threshold is the largest of those DIs that is not an outlier (the upper
whisker of a box plot: at most Q3 + 1.5 IQR). Pixels with DI above it are outside the area of
applicability: the model is extrapolating there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial.distance import pdist
from sklearn.neighbors import NearestNeighbors

from dunemap.errors import CheckpointError, InputError

MAX_SAMPLES = 4096  # training samples kept: bounds the checkpoint size and the cost of a neighbour query
MAX_DIMS = 16  # PCA components kept
PAIR_SAMPLES = 1500  # samples used for the mean pairwise distance
QUERY_CHUNK = 65536  # pixels per neighbour query: bounds memory whatever the block size


@dataclass
class Applicability:
    """A fitted description of the training data in the model's feature space, and its DI threshold."""

    mean: np.ndarray  # (D,) feature means
    scale: np.ndarray  # (D,) feature standard deviations
    components: np.ndarray  # (D, R) PCA projection
    samples: np.ndarray  # (N, R) training samples in the reduced space
    mean_distance: float  # mean pairwise distance of training samples (the DI's unit)
    threshold: float  # DI above this is outside the area of applicability
    train_di: np.ndarray | None = None  # (N,) cross-fold DI of the training samples (diagnostics only)

    def __post_init__(self) -> None:
        self._index: NearestNeighbors | None = None

    @property
    def feature_dim(self) -> int:
        return int(self.mean.shape[0])

    def project(self, features: np.ndarray) -> np.ndarray:
        """(M, D) features to the reduced (M, R) space."""
        return ((np.asarray(features, np.float32) - self.mean) / self.scale) @ self.components

    def dissimilarity(self, features: np.ndarray) -> np.ndarray:
        """DI of each row of ``features`` (M, D): nearest training sample distance / mean training distance."""
        features = np.asarray(features, np.float32)
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise InputError(f"features of shape {features.shape} do not fit the applicability model (D={self.feature_dim})")
        if self._index is None:
            self._index = NearestNeighbors(n_neighbors=1).fit(self.samples)
        out = np.empty(features.shape[0], np.float32)
        for start in range(0, features.shape[0], QUERY_CHUNK):
            part = self.project(features[start : start + QUERY_CHUNK])
            dist, _ = self._index.kneighbors(part)
            out[start : start + part.shape[0]] = dist[:, 0] / self.mean_distance
        return out

    def to_dict(self) -> dict:
        """A ``torch.load(weights_only=True)``-safe dict (tensors and floats) for the checkpoint."""
        return {
            "mean": torch.from_numpy(self.mean.astype(np.float32)),
            "scale": torch.from_numpy(self.scale.astype(np.float32)),
            "components": torch.from_numpy(self.components.astype(np.float32)),
            "samples": torch.from_numpy(self.samples.astype(np.float32)),
            "mean_distance": float(self.mean_distance),
            "threshold": float(self.threshold),
        }

    @classmethod
    def from_dict(cls, payload: dict, source: str = "checkpoint") -> Applicability:
        try:
            return cls(
                mean=payload["mean"].numpy(), scale=payload["scale"].numpy(),
                components=payload["components"].numpy(), samples=payload["samples"].numpy(),
                mean_distance=float(payload["mean_distance"]), threshold=float(payload["threshold"]),
            )
        except (KeyError, AttributeError, TypeError) as exc:
            raise CheckpointError(f"{source}: malformed area-of-applicability record ({exc})") from None


def upper_whisker(values: np.ndarray) -> float:
    """The largest value not above Q3 + 1.5 IQR (the box plot's upper whisker): an outlier-removed maximum."""
    values = np.asarray(values, np.float64)
    q1, q3 = np.percentile(values, [25, 75])
    return float(values[values <= q3 + 1.5 * (q3 - q1)].max())


def fit_applicability(
    features: np.ndarray, folds: np.ndarray, *, max_samples: int = MAX_SAMPLES, dims: int = MAX_DIMS, seed: int = 0
) -> Applicability:
    """Fit the area of applicability from training features (N, D) and their cross-validation ``folds`` (N,).

    ``folds`` group samples that must not vouch for each other (samples of one tile or one scene);
    at least two folds are needed.
    """
    features = np.asarray(features, np.float32)
    folds = np.asarray(folds)
    if features.ndim != 2 or folds.shape != features.shape[:1]:
        raise InputError(f"expected features (N, D) and folds (N,), got {features.shape} and {folds.shape}")
    if not np.isfinite(features).all():
        raise InputError("non-finite training features: cannot describe the training data")
    if np.unique(folds).size < 2:
        raise InputError("the area of applicability needs training samples from at least two tiles or scenes")
    rng = np.random.default_rng(seed)
    if features.shape[0] > max_samples:
        keep = np.sort(rng.choice(features.shape[0], max_samples, replace=False))
        features, folds = features[keep], folds[keep]
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale[scale < 1e-6] = 1.0  # a constant feature carries no distance
    standard = (features - mean) / scale
    _, _, vt = np.linalg.svd(standard - standard.mean(axis=0), full_matrices=False)
    components = vt[: min(dims, vt.shape[0])].T.astype(np.float32)  # (D, R)
    samples = (standard @ components).astype(np.float32)
    pair = samples if samples.shape[0] <= PAIR_SAMPLES else samples[rng.choice(samples.shape[0], PAIR_SAMPLES, replace=False)]
    mean_distance = float(pdist(pair).mean())
    if not mean_distance > 0:
        raise InputError("all training samples are identical: cannot describe the training data")
    train_di = np.empty(samples.shape[0], np.float32)
    for fold in np.unique(folds):
        inside = folds == fold
        index = NearestNeighbors(n_neighbors=1).fit(samples[~inside])
        dist, _ = index.kneighbors(samples[inside])
        train_di[inside] = dist[:, 0] / mean_distance
    return Applicability(mean, scale, components, samples, mean_distance, upper_whisker(train_di), train_di)


__all__ = ["Applicability", "MAX_SAMPLES", "fit_applicability", "upper_whisker"]
