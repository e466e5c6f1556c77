"""Area of applicability: DI against brute force, a threshold from the training data, unfamiliar data outside."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist, pdist

from dunemap.errors import InputError
from dunemap.trust.applicability import Applicability, fit_applicability, upper_whisker


def _clusters(seed=0, n=600, d=12):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, size=(3, d))
    folds = rng.integers(0, 5, size=n)
    feats = centres[rng.integers(0, 3, size=n)] + rng.normal(0, 1, size=(n, d))
    return feats.astype(np.float32), folds


def test_upper_whisker_drops_outliers():
    values = np.r_[np.linspace(0, 1, 101), 50.0]
    assert upper_whisker(values) == pytest.approx(1.0)


def test_dissimilarity_equals_brute_force_nearest_distance():
    feats, folds = _clusters()
    model = fit_applicability(feats, folds, dims=12)
    new = feats[:50] + 0.3
    expected = cdist(model.project(new), model.samples).min(axis=1) / model.mean_distance
    assert np.allclose(model.dissimilarity(new), expected, rtol=1e-4, atol=1e-5)
    pair = pdist(model.samples).mean()
    assert model.mean_distance == pytest.approx(pair, rel=1e-4)


def test_training_like_data_inside_unfamiliar_data_outside():
    feats, folds = _clusters()
    model = fit_applicability(feats, folds)
    familiar, _ = _clusters(seed=0, n=400)  # same clusters, new draws
    rng = np.random.default_rng(5)
    unfamiliar = rng.normal(15, 1, size=(400, feats.shape[1])).astype(np.float32)
    assert (model.dissimilarity(familiar) <= model.threshold).mean() > 0.95
    assert (model.dissimilarity(unfamiliar) > model.threshold).mean() > 0.99


def test_round_trip_through_a_weights_only_checkpoint(tmp_path):
    feats, folds = _clusters()
    model = fit_applicability(feats, folds, max_samples=256)
    assert model.samples.shape[0] == 256
    torch.save({"aoa": model.to_dict()}, tmp_path / "c.pth")
    back = Applicability.from_dict(torch.load(tmp_path / "c.pth", weights_only=True)["aoa"])
    assert back.threshold == model.threshold
    assert np.array_equal(back.dissimilarity(feats[:20]), model.dissimilarity(feats[:20]))


def test_one_fold_or_nonfinite_features_are_refused():
    feats, folds = _clusters()
    with pytest.raises(InputError, match="two tiles"):
        fit_applicability(feats, np.zeros_like(folds))
    feats[3, 2] = np.inf
    with pytest.raises(InputError, match="non-finite"):
        fit_applicability(feats, folds)
