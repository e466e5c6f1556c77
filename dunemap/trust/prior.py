"""The class shares of new ground: a label-shift correction fitted to the model's probabilities there.

A model's probabilities carry the class shares of its training data as a prior. New ground has its
own: a Namib scene has no parabolic dunes, yet a model trained on five deserts gives them a share
everywhere, and a class absent from a scene costs a whole class of mIoU wherever it is mapped. Given
the scene's calibrated probabilities ``p(c|x)`` and the training shares ``pi``, the EM algorithm of
Saerens, Latinne & Decaestecker (2002) finds the scene's shares ``q`` that the probabilities imply,
and Bayes' rule would move each pixel's probabilities to ``p(c|x) q_c / pi_c`` (renormalised).
Labelled pixels of the scene (the user's patches) enter the EM with their labels, so a class the
model maps where the user drew another loses its share.

The correction applied is **one-sided**: ``p(c|x) min(q_c / pi_c, 1)``. A class the scene has less of
than the training data is damped (an absent one all but removed); no class is raised. Raising the
classes the EM finds more of amplifies the model's own confusions, the dominant class grows at its
neighbours' expense: on the held-out scenes of ``benchmarks/bench_adapt.py`` (10 suggested patches,
two seeds; base model 0.459 per scene, 0.705 pooled) the two-sided correction gave 0.630 per scene and
0.696 pooled, the one-sided one 0.709 and 0.764; on two scenes of other regions
(``benchmarks/bench_prior_rule.py``) 0.710 / 0.728 against 0.751 / 0.793 (docs/adapt.md).

:class:`ScenePrior` is stored in a fine-tuned checkpoint's calibration record, with the ground it was
fitted on (CRS and bounds of each source raster). It applies only to rasters that overlap that
ground (:meth:`ScenePrior.covers`); elsewhere the model maps with its training shares.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from dunemap.errors import CheckpointError

SHARE_FLOOR = 1e-6  # the smallest class share a prior gives (a log-share of -13.8: the class is never mapped)
MAX_ITERATIONS = 500
TOLERANCE = 1e-7  # EM stops when no share moves more than this


def em_shares(probabilities: np.ndarray, train_shares: np.ndarray, labelled: np.ndarray | None = None,
              weight: float = 1.0) -> tuple[np.ndarray, int]:
    """The class shares (K,) of a scene and the iterations taken, by EM (Saerens et al. 2002).

    ``probabilities`` (N, K) are calibrated class probabilities of a sample of the scene's pixels, each
    standing for ``weight`` pixels; ``labelled`` (K,) counts the scene's labelled pixels per class, which
    enter every iteration with their labels. ``train_shares`` (K,) are the training data's shares.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    pi = np.clip(np.asarray(train_shares, dtype=np.float64), SHARE_FLOOR, None)
    counts = np.zeros(p.shape[1]) if labelled is None else np.asarray(labelled, dtype=np.float64)
    total = weight * p.shape[0] + counts.sum()
    if total <= 0:
        raise ValueError("no pixel to estimate class shares from")
    q = pi / pi.sum()
    for iteration in range(1, MAX_ITERATIONS + 1):
        a = p * (q / pi)  # (N, K) posteriors under the current shares, then normalised per pixel
        a /= np.clip(a.sum(axis=1, keepdims=True), 1e-300, None)
        new = (weight * a.sum(axis=0) + counts) / total
        if np.max(np.abs(new - q)) < TOLERANCE:
            return new, iteration
        q = new
    return q, MAX_ITERATIONS


def _intersects(a: list[float], b: list[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@dataclass
class ScenePrior:
    """Class shares of new ground (``shares``) against the training data's (``train_shares``), and where."""

    shares: list[float]
    train_shares: list[float]
    ground: list[dict] = field(default_factory=list)  # {"source": path, "crs": WKT, "bounds": [w, s, e, n]}
    labelled_pixels: int = 0  # labelled pixels of the ground that entered the fit
    sampled_pixels: int = 0  # unlabelled pixels sampled from the model's probabilities
    iterations: int = 0

    def bias(self) -> np.ndarray:
        """The (K,) float32 term added to the calibrated logits: ``min(log(q / pi), 0)`` (one-sided, above)."""
        q = np.clip(np.asarray(self.shares, dtype=np.float64), SHARE_FLOOR, None)
        pi = np.clip(np.asarray(self.train_shares, dtype=np.float64), SHARE_FLOOR, None)
        return np.minimum(np.log(q / pi), 0.0).astype(np.float32)

    def covers(self, crs, bounds) -> bool:
        """Whether a raster in ``crs`` with ``bounds`` (w, s, e, n) overlaps the ground the shares describe."""
        from rasterio.crs import CRS

        if crs is None:
            return False
        for place in self.ground:
            if CRS.from_user_input(place["crs"]) == CRS.from_user_input(crs) and _intersects(place["bounds"],
                                                                                           list(bounds)):
                return True
        return False

    def describe(self) -> str:
        sources = ", ".join(sorted({str(g["source"]) for g in self.ground})) or "no ground"
        return f"class shares of {sources} ({self.labelled_pixels} labelled pixels, {self.sampled_pixels} sampled)"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict, where: str = "checkpoint") -> ScenePrior:
        try:
            prior = cls(**record)
        except TypeError as exc:
            raise CheckpointError(f"{where}: unreadable scene prior ({exc})") from None
        if len(prior.shares) != len(prior.train_shares) or not np.all(np.isfinite(prior.shares)):
            raise CheckpointError(f"{where}: scene prior with {len(prior.shares)} shares for "
                                  f"{len(prior.train_shares)} classes, or non-finite shares")
        return prior


__all__ = ["SHARE_FLOOR", "ScenePrior", "em_shares"]
