"""Area of applicability: where a map rests on ground like the training data (Meyer & Pebesma 2021).

The training data are described by a bounded sample of the model's own per-pixel features
(standardised and reduced by PCA). The *dissimilarity index* (DI) of a pixel is the distance to
its nearest training sample divided by the mean distance between training samples. The threshold
comes from the training data alone: each training sample's DI to the samples of the *other*
cross-validation folds (folds are whole tiles or scenes, so a sample is never compared with its
own neighbours), and the threshold is the largest of those DIs that is not an outlier (the upper
whisker of a box plot: at most Q3 + 1.5 IQR). Pixels with DI above it are outside the area of
applicability: the model is extrapolating there.

Two spaces are described, and a pixel must resemble the training data in both: the decoder's
features (what the classifier sees) and the model's input, the embeddings averaged over the same
cells (what the sensor recorded). A network can map ground it never saw, another sensor or another
sand, onto features among the training data's, so the feature space alone misses it; the input
space alone does not see what the model makes of the spatial pattern. The map's DI is the larger of
the two, the input-space DI rescaled so that both thresholds coincide (the feature space's).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from dunemap.errors import CheckpointError, InputError

MAX_SAMPLES = 4096  # training samples kept: bounds the checkpoint size and the cost of a neighbour query
MAX_DIMS = 16  # PCA components kept
PAIR_SAMPLES = 1500  # samples used for the mean pairwise distance
POOL = 2  # decoder features (1/4 resolution) are averaged over POOL x POOL cells: the DI is searched at 1/8
QUERY_CHUNK = 512  # cells per neighbour query: (chunk x samples) float32 distances, 8 MiB; twice as fast as 4,096


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
    pool: int = 1  # feature cells averaged per side before the search (records older than POOL have 1)
    inputs: Applicability | None = None  # the input embeddings per cell (pool = pixels per side); None in older records
    _tensors: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def feature_dim(self) -> int:
        return int(self.mean.shape[0])

    def project(self, features: np.ndarray | torch.Tensor) -> np.ndarray:
        """(M, D) features to the reduced (M, R) space."""
        return self._project(_tensor(features)).numpy()

    def dissimilarity(self, features: np.ndarray | torch.Tensor) -> np.ndarray:
        """DI of each row of ``features`` (M, D): nearest training sample distance / mean training distance."""
        features = _tensor(features)
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise InputError(f"features of shape {tuple(features.shape)} do not fit the applicability model "
                             f"(D={self.feature_dim})")
        return (_nearest(self._project(features), self._torch("samples")) / self.mean_distance).numpy()

    def dissimilarity_map(self, features: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """DI (B, H, W) float32 on the CPU of the input ``x`` (B, C, H, W) and its decoder features (B, D, H/4, W/4).

        The features are averaged over ``pool`` x ``pool`` cells and searched; with an input-space
        record the input is averaged over the same cells (:func:`pool_inputs`) and searched too,
        and each cell keeps the larger DI, the input's rescaled to this record's threshold. The DI is
        then upsampled bilinearly back to the input's pixels: the one way every caller turns
        features into a DI map. All in torch: numpy's own BLAS threads would then compete with the
        model's for the cores.
        """
        di = self._cell_dissimilarity(pool_features(features.float().cpu(), self.pool))
        if self.inputs is not None:
            di_inputs = self.inputs._cell_dissimilarity(pool_inputs(x.float().cpu(), self.inputs.pool))
            di = torch.maximum(di, di_inputs * (self.threshold / self.inputs.threshold))
        di = F.interpolate(di, scale_factor=4 * self.pool, mode="bilinear", align_corners=False)
        return di[:, 0, : x.shape[-2], : x.shape[-1]]

    def _cell_dissimilarity(self, cells: torch.Tensor) -> torch.Tensor:
        """DI (B, 1, h, w) of cell vectors (B, D, h, w)."""
        b, d, h, w = cells.shape
        return torch.from_numpy(self.dissimilarity(cells.permute(0, 2, 3, 1).reshape(-1, d))).reshape(b, 1, h, w)

    def _torch(self, name: str) -> torch.Tensor:
        """A fitted array as a float32 tensor, converted once."""
        if name not in self._tensors:
            self._tensors[name] = _tensor(getattr(self, name))
        return self._tensors[name]

    def _project(self, features: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return ((features - self._torch("mean")) / self._torch("scale")) @ self._torch("components")

    def to_dict(self) -> dict:
        """A ``torch.load(weights_only=True)``-safe dict (tensors and floats) for the checkpoint."""
        return {
            "mean": torch.from_numpy(self.mean.astype(np.float32)),
            "scale": torch.from_numpy(self.scale.astype(np.float32)),
            "components": torch.from_numpy(self.components.astype(np.float32)),
            "samples": torch.from_numpy(self.samples.astype(np.float32)),
            "mean_distance": float(self.mean_distance),
            "threshold": float(self.threshold),
            "pool": int(self.pool),
            **({} if self.inputs is None else {"inputs": self.inputs.to_dict()}),
        }

    @classmethod
    def from_dict(cls, payload: dict, source: str = "checkpoint") -> Applicability:
        try:
            return cls(
                mean=payload["mean"].numpy(), scale=payload["scale"].numpy(),
                components=payload["components"].numpy(), samples=payload["samples"].numpy(),
                mean_distance=float(payload["mean_distance"]), threshold=float(payload["threshold"]),
                pool=int(payload.get("pool", 1)),
                inputs=cls.from_dict(payload["inputs"], source) if "inputs" in payload else None,
            )
        except (KeyError, AttributeError, TypeError) as exc:
            raise CheckpointError(f"{source}: malformed area-of-applicability record ({exc})") from None


def pool_features(features: torch.Tensor, pool: int) -> torch.Tensor:
    """(B, D, h, w) features averaged over ``pool`` x ``pool`` cells (a partial cell at the edge over what it holds)."""
    return features if pool == 1 else F.avg_pool2d(features, pool, ceil_mode=True)


def pool_inputs(x: torch.Tensor, pool: int) -> torch.Tensor:
    """(B, C, H, W) model input averaged over its valid pixels in ``pool`` x ``pool`` cells: (B, C, ceil(H/pool), ...).

    A pixel is valid when any band is non-zero (nodata reaches the model as zeros), so a cell at a
    nodata hole or a raster edge describes the ground it holds; a cell without any is all zeros.
    """
    valid = (x.abs().amax(dim=1, keepdim=True) > 0).to(x.dtype)  # any band non-zero (faster than any())
    total = F.avg_pool2d(x, pool, ceil_mode=True)  # invalid pixels add nothing: they are zero in every band
    count = F.avg_pool2d(valid, pool, ceil_mode=True)
    return total / count.clamp_min(1e-12)


def nearest_distance(queries: np.ndarray, samples: np.ndarray, chunk: int = QUERY_CHUNK) -> np.ndarray:
    """Euclidean distance (M,) from each row of ``queries`` (M, R) to its nearest row of ``samples`` (N, R).

    Brute force as matrix products (the nearest sample minimises |s|^2 - 2 q.s; torch's BLAS, all
    cores) in chunks of ``chunk`` queries, so memory stays bounded, then the distance to that
    sample computed directly (no cancellation error near 0).
    """
    return _nearest(_tensor(queries), _tensor(samples), chunk).numpy()


def _tensor(values: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.detach().float().cpu().contiguous()
    return torch.from_numpy(np.ascontiguousarray(values, np.float32))


def _nearest(queries: torch.Tensor, bank: torch.Tensor, chunk: int = QUERY_CHUNK) -> torch.Tensor:
    out = torch.empty(queries.shape[0], dtype=torch.float32)
    with torch.inference_mode():
        bank_sq = (bank * bank).sum(dim=1)
        for start in range(0, queries.shape[0], chunk):
            q = queries[start : start + chunk]
            nearest = torch.addmm(bank_sq, q, bank.T, alpha=-2.0).argmin(dim=1)  # (m,) of |s|^2 - 2 q.s
            out[start : start + q.shape[0]] = (q - bank[nearest]).norm(dim=1)  # exact, also at distance ~0
    return out


def upper_whisker(values: np.ndarray) -> float:
    """The largest value not above Q3 + 1.5 IQR (the box plot's upper whisker): an outlier-removed maximum."""
    values = np.asarray(values, np.float64)
    q1, q3 = np.percentile(values, [25, 75])
    return float(values[values <= q3 + 1.5 * (q3 - q1)].max())


def fit_applicability(
    features: np.ndarray, folds: np.ndarray, *, max_samples: int = MAX_SAMPLES, dims: int = MAX_DIMS, seed: int = 0,
    pool: int = 1,
) -> Applicability:
    """Fit the area of applicability from training features (N, D) and their cross-validation ``folds`` (N,).

    ``pool``: the features were averaged over that many cells per side (:func:`pool_features`); maps then do the same.

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
    from scipy.spatial.distance import pdist  # here: the maps that only apply a fitted area spare its import

    mean_distance = float(pdist(pair).mean())
    if not mean_distance > 0:
        raise InputError("all training samples are identical: cannot describe the training data")
    train_di = np.empty(samples.shape[0], np.float32)
    for fold in np.unique(folds):
        inside = folds == fold
        train_di[inside] = nearest_distance(samples[inside], samples[~inside]) / mean_distance
    return Applicability(mean, scale, components, samples, mean_distance, upper_whisker(train_di), train_di, pool)


__all__ = ["Applicability", "MAX_SAMPLES", "POOL", "fit_applicability", "nearest_distance", "pool_features",
           "pool_inputs", "upper_whisker"]
