"""Per-pixel baselines on the 64-d embeddings (random forest, k nearest neighbours): the canonical AEF workflow.

Earth Engine tutorials on satellite embeddings draw a fixed number of labelled pixels per class
(``stratifiedSample``), fit a random forest or kNN on their 64 values and classify every pixel on its
own. :func:`stratified_pixel_sample` draws that sample from the tiles of a seed-layout split,
:func:`fit_pixel_classifier` fits the estimator named in ``PIXEL_METHODS``, and
:func:`pixel_confusion` classifies the labelled pixels of other tiles into a confusion matrix, so the
baselines are scored exactly like the networks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from dunemap.data.dataset import SeedLayoutDataset, label_histogram, read_label
from dunemap.data.seed_layout import IGNORE_INDEX
from dunemap.errors import ConfigError, InputError
from dunemap.io.progress import progress_bar
from dunemap.metrics import ConfusionMatrix
from dunemap.registry import choose

if TYPE_CHECKING:  # sklearn is imported when a baseline is built, keeping `dunemap --help` fast
    from sklearn.base import ClassifierMixin

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PixelConfig:
    """One per-pixel baseline: which estimator, its size, and the labelled-pixel sample it learns from."""

    method: str = "rf"  # a key of PIXEL_METHODS
    pixels_per_class: int = 500  # labelled pixels drawn per class from the training tiles (fewer if a class has fewer)
    n_estimators: int = 100  # random-forest trees (the tutorials' smileRandomForest(100))
    n_neighbors: int = 5  # k of the kNN vote
    n_jobs: int = 1  # sklearn worker threads
    seed: int = 0  # seeds the pixel sample and the forest

    def __post_init__(self) -> None:
        choose(PIXEL_METHODS, self.method, "pixel method")
        for name in ("pixels_per_class", "n_estimators", "n_neighbors"):
            if getattr(self, name) < 1:
                raise ConfigError(f"pixel baseline {name}={getattr(self, name)}; expected a positive integer")


def _random_forest(config: PixelConfig) -> "ClassifierMixin":
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=config.n_estimators, random_state=config.seed, n_jobs=config.n_jobs)


def _knn(config: PixelConfig) -> "ClassifierMixin":
    from sklearn.neighbors import KNeighborsClassifier

    # Embeddings are unit vectors, so Euclidean neighbours are the cosine-similarity neighbours.
    return KNeighborsClassifier(n_neighbors=config.n_neighbors, n_jobs=config.n_jobs)


PIXEL_METHODS: dict[str, Callable[[PixelConfig], "ClassifierMixin"]] = {
    "rf": _random_forest,
    "knn": _knn,
}


@dataclass
class PixelSample:
    """Labelled pixels drawn from a split: features (N, C) float32 and class ids (N,) int64."""

    features: np.ndarray
    labels: np.ndarray
    available: np.ndarray  # (K,) int64: labelled pixels of each class in the split

    @property
    def counts(self) -> np.ndarray:
        """(K,) int64: drawn pixels per class."""
        return np.bincount(self.labels, minlength=len(self.available)).astype(np.int64)


def allocate_draws(tile_counts: np.ndarray, per_class: int, rng: np.random.Generator) -> list[dict[int, np.ndarray]]:
    """Choose which labelled pixels to draw: for each tile, class id -> sorted ranks among that tile's pixels of the class.

    ``tile_counts`` is (T, K): pixels of class k in tile t. Each class gets ``min(per_class, total)``
    pixels drawn uniformly without replacement from all its pixels across tiles.
    """
    n_tiles, k = tile_counts.shape
    draws: list[dict[int, np.ndarray]] = [{} for _ in range(n_tiles)]
    for c in range(k):
        column = tile_counts[:, c].astype(np.int64)
        total = int(column.sum())
        if total == 0:
            continue
        picked = np.sort(rng.choice(total, size=min(per_class, total), replace=False))
        starts = np.concatenate([[0], np.cumsum(column)[:-1]])  # first global index of each tile
        tiles = np.searchsorted(starts, picked, side="right") - 1
        for t in np.unique(tiles):
            draws[int(t)][c] = picked[tiles == t] - starts[t]
    return draws


def stratified_pixel_sample(
    dataset: SeedLayoutDataset, per_class: int, seed: int, progress: bool = False
) -> PixelSample:
    """Draw up to ``per_class`` labelled pixels of every class, uniformly over all tiles of ``dataset``.

    Ignore pixels (255) are never drawn. The draw depends only on ``seed`` and the labels.
    """
    k = dataset.num_classes
    tile_counts = np.zeros((len(dataset), k), dtype=np.int64)
    for i, (_, ann_path) in enumerate(dataset.samples):
        tile_counts[i] = label_histogram(read_label(ann_path), ann_path, k)[:k]
    available = tile_counts.sum(axis=0)
    if available.sum() == 0:
        raise InputError(f"split {dataset.split!r} of {dataset.root}: no labelled pixel to train a pixel baseline on")
    draws = allocate_draws(tile_counts, per_class, np.random.default_rng(seed))
    features, labels = [], []
    for i in progress_bar(range(len(dataset)), enabled=progress, desc="sampling pixels", leave=False):
        if not draws[i]:
            continue
        image, label = dataset.load(i)
        flat_label = label.ravel()
        flat_image = image.reshape(image.shape[0], -1)  # (C, H*W)
        for c, ranks in draws[i].items():
            where = np.flatnonzero(flat_label == c)[ranks]
            features.append(flat_image[:, where].T)
            labels.append(np.full(len(where), c, dtype=np.int64))
    return PixelSample(np.concatenate(features).astype(np.float32), np.concatenate(labels), available)


@dataclass
class PixelClassifier:
    """A fitted per-pixel baseline and what it was fitted on."""

    config: PixelConfig
    estimator: "ClassifierMixin"
    sample_counts: np.ndarray  # (K,) pixels per class it learned from
    fit_seconds: float


def fit_pixel_classifier(dataset: SeedLayoutDataset, config: PixelConfig, progress: bool = False) -> PixelClassifier:
    """Sample labelled pixels of ``dataset`` and fit the baseline ``config.method`` on them."""
    start = time.perf_counter()
    sample = stratified_pixel_sample(dataset, config.pixels_per_class, config.seed, progress=progress)
    estimator = choose(PIXEL_METHODS, config.method, "pixel method")(config)
    if "n_neighbors" in estimator.get_params():
        estimator.set_params(n_neighbors=min(config.n_neighbors, len(sample.labels)))
    estimator.fit(sample.features, sample.labels)
    seconds = time.perf_counter() - start
    log.info("%s fitted on %d pixels (%s per class) in %.1f s", config.method, len(sample.labels),
             sample.counts.tolist(), seconds)
    return PixelClassifier(config, estimator, sample.counts, seconds)


def pixel_confusion(
    classifier: "PixelClassifier | ClassifierMixin",
    datasets: Sequence[SeedLayoutDataset],
    num_classes: int,
    chunk: int = 65536,
    progress: bool = False,
) -> np.ndarray:
    """(K, K) confusion matrix of classifying every labelled pixel of ``datasets`` one pixel at a time."""
    estimator = classifier.estimator if isinstance(classifier, PixelClassifier) else classifier
    cm = ConfusionMatrix(num_classes, IGNORE_INDEX)
    total = sum(len(d) for d in datasets)
    with progress_bar(total=total, enabled=progress, desc="pixel predict", leave=False) as bar:
        for dataset in datasets:
            for i in range(len(dataset)):
                image, label = dataset.load(i)
                keep = label != IGNORE_INDEX
                truth = label[keep].astype(np.int64)
                pixels = image[:, keep].T  # (N, C)
                for lo in range(0, len(truth), chunk):
                    pred = np.asarray(estimator.predict(pixels[lo:lo + chunk]), dtype=np.int64)
                    cm.update(pred, truth[lo:lo + chunk])
                bar.update(1)
    return cm.matrix


__all__ = [
    "PIXEL_METHODS", "PixelClassifier", "PixelConfig", "PixelSample", "allocate_draws", "fit_pixel_classifier",
    "pixel_confusion", "stratified_pixel_sample",
]
