"""Per-pixel baselines: the stratified draw is exact and seeded, and RF / kNN learn separable embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dunemap.comparison.pixel import (
    PixelConfig, allocate_draws, fit_pixel_classifier, pixel_confusion, stratified_pixel_sample)
from dunemap.data.dataset import SeedLayoutDataset
from dunemap.data.seed_layout import write_sample
from dunemap.errors import ConfigError, InputError
from dunemap.metrics import metrics_from_matrix


def test_allocate_draws_takes_min_of_quota_and_supply_without_repeats() -> None:
    counts = np.array([[5, 0, 2], [3, 0, 0], [10, 0, 1]])  # 3 tiles x 3 classes
    draws = allocate_draws(counts, per_class=4, rng=np.random.default_rng(0))
    for c, expected in enumerate([4, 0, 3]):
        assert sum(len(d.get(c, [])) for d in draws) == expected
    for t, d in enumerate(draws):
        for c, ranks in d.items():
            assert np.all(np.diff(ranks) > 0) and ranks.min() >= 0 and ranks.max() < counts[t, c]
    again = allocate_draws(counts, per_class=4, rng=np.random.default_rng(0))
    assert all(d.keys() == e.keys() and all(np.array_equal(d[k], e[k]) for k in d) for d, e in zip(draws, again))


def test_stratified_sample_draws_real_pixels_of_each_class(tiny_dataset: Path) -> None:
    ds = SeedLayoutDataset(tiny_dataset, "train", num_classes=4, in_channels=16)
    sample = stratified_pixel_sample(ds, per_class=30, seed=1)
    assert sample.counts.tolist() == [30, 30, 30, 30]
    pixels = {}
    for i in range(len(ds)):
        image, label = ds.load(i)
        for row, c in zip(image.reshape(16, -1).T, label.ravel()):
            pixels[row.tobytes()] = int(c)
    assert all(pixels[f.tobytes()] == c for f, c in zip(sample.features, sample.labels))
    assert len({f.tobytes() for f in sample.features}) == len(sample.labels)  # no pixel drawn twice
    other = stratified_pixel_sample(ds, per_class=30, seed=2)
    assert not np.array_equal(sample.features, other.features)


def test_sample_never_draws_ignore_pixels_and_caps_rare_classes(tmp_path: Path) -> None:
    label = np.full((8, 8), 255, np.uint8)
    label[:2] = 0
    label[2, :3] = 1  # 3 pixels of class 1
    image = np.random.default_rng(0).standard_normal((4, 8, 8)).astype(np.float32)
    write_sample(tmp_path, "train", "t0", image, label)
    sample = stratified_pixel_sample(SeedLayoutDataset(tmp_path, "train", num_classes=3, in_channels=4), 10, 0)
    assert sample.counts.tolist() == [10, 3, 0] and sample.available.tolist() == [16, 3, 0]


def test_sample_of_unlabelled_split_fails(tmp_path: Path) -> None:
    write_sample(tmp_path, "train", "t0", np.ones((4, 8, 8), np.float32), np.full((8, 8), 255, np.uint8))
    with pytest.raises(InputError, match="no labelled pixel"):
        stratified_pixel_sample(SeedLayoutDataset(tmp_path, "train", num_classes=3, in_channels=4), 10, 0)


@pytest.mark.parametrize("method", ["rf", "knn"])
def test_pixel_baselines_classify_separable_embeddings(tiny_dataset: Path, method: str) -> None:
    train = SeedLayoutDataset(tiny_dataset, "train", num_classes=4, in_channels=16)
    test = SeedLayoutDataset(tiny_dataset, "test", num_classes=4, in_channels=16)
    clf = fit_pixel_classifier(train, PixelConfig(method=method, pixels_per_class=100, n_estimators=20, seed=0))
    matrix = pixel_confusion(clf, [test], 4, chunk=1000)
    assert matrix.sum() == 2 * 64 * 64  # every labelled pixel of both test tiles, counted once
    assert metrics_from_matrix(matrix).oa > 0.9


def test_pixel_config_rejects_unknown_method_and_bad_sizes() -> None:
    with pytest.raises(ConfigError, match="unknown pixel method 'svm'; valid: knn, rf"):
        PixelConfig(method="svm")
    with pytest.raises(ConfigError, match="pixels_per_class=0"):
        PixelConfig(pixels_per_class=0)
