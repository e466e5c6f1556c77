"""The class shares of new ground (dunemap.trust.prior): EM on calibrated probabilities, labels, the ground."""

from __future__ import annotations

import numpy as np
import pytest

from dunemap.errors import CheckpointError
from dunemap.trust.prior import SHARE_FLOOR, ScenePrior, em_shares

MEANS = np.array([-2.0, 0.0, 2.0])  # three classes, unit-variance Gaussian likelihoods on a line


def _posteriors(x: np.ndarray, prior: np.ndarray) -> np.ndarray:
    like = np.exp(-0.5 * (x[:, None] - MEANS[None, :]) ** 2)  # (N, K)
    p = like * prior
    return p / p.sum(axis=1, keepdims=True)


def _scene(shares: list[float], n: int = 30_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=n, p=shares)
    return rng.normal(MEANS[y], 1.0), y


def test_em_recovers_the_class_shares_of_a_scene_whose_mix_differs_from_training() -> None:
    train = np.array([1 / 3, 1 / 3, 1 / 3])
    x, y = _scene([0.7, 0.3, 0.0])
    p = _posteriors(x, train)  # what a calibrated model trained on equal shares says
    shares, iterations = em_shares(p, train)
    assert 1 < iterations < 500
    np.testing.assert_allclose(shares, [0.7, 0.3, 0.0], atol=0.02)
    assert shares.sum() == pytest.approx(1.0)
    # Bayes' rule with the fitted shares predicts the scene better than the training shares do
    adjusted = p * (shares / train)
    assert (adjusted.argmax(1) == y).mean() > (p.argmax(1) == y).mean() + 0.01


def test_labelled_pixels_enter_with_their_labels() -> None:
    train = np.array([1 / 3, 1 / 3, 1 / 3])
    p = _posteriors(np.zeros(1000), train)  # every unlabelled pixel ambiguous between its neighbours
    alone, _ = em_shares(p, train)
    labelled, _ = em_shares(p, train, labelled=np.array([0.0, 0.0, 3000.0]))
    assert labelled[2] > alone[2] + 0.5  # 3000 labelled pixels of class 2 beside 1000 unlabelled
    # each sampled pixel may stand for many: then the same labels weigh less
    weighted, _ = em_shares(p, train, labelled=np.array([0.0, 0.0, 3000.0]), weight=100.0)
    assert alone[2] < weighted[2] < labelled[2]


def test_the_bias_damps_the_classes_the_scene_has_less_of_and_raises_none() -> None:
    prior = ScenePrior(shares=[0.6, 0.3, 0.1, 0.0], train_shares=[0.25, 0.25, 0.25, 0.25],
                       ground=[{"source": "a.tif", "crs": "EPSG:32733", "bounds": [0, 0, 100, 100]}])
    np.testing.assert_allclose(prior.bias(), np.log([1.0, 1.0, 0.4, SHARE_FLOOR / 0.25]), rtol=1e-6)


def test_the_ground_is_checked_by_crs_and_bounds() -> None:
    prior = ScenePrior(shares=[0.5, 0.5, 0.0], train_shares=[0.25, 0.25, 0.5],
                       ground=[{"source": "a.tif", "crs": "EPSG:32733", "bounds": [0, 0, 100, 100]}])
    assert np.isfinite(prior.bias()).all()
    assert prior.covers("EPSG:32733", (50, 50, 150, 150))
    assert not prior.covers("EPSG:32733", (100, 0, 200, 100))  # touching is not overlapping
    assert not prior.covers("EPSG:32734", (50, 50, 150, 150))  # the same numbers in another zone
    assert not prior.covers(None, (50, 50, 150, 150))
    assert ScenePrior.from_dict(prior.to_dict()) == prior
    with pytest.raises(CheckpointError, match="scene prior"):
        ScenePrior.from_dict({"shares": [1.0], "train_shares": [0.5, 0.5]}, "x.pth")
