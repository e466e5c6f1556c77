"""Area of applicability: DI against brute force, a threshold from the training data, unfamiliar data outside."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist, pdist

from dunemap.errors import InputError
from dunemap.trust.applicability import (
    QUERY_CHUNK,
    Applicability,
    fit_applicability,
    nearest_distance,
    pool_inputs,
    upper_whisker,
)


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


def test_nearest_distance_across_chunks_and_for_exact_matches():
    rng = np.random.default_rng(3)
    samples = rng.normal(0, 3, size=(700, 16)).astype(np.float32)
    queries = np.concatenate([rng.normal(0, 3, size=(QUERY_CHUNK + 37, 16)), samples[:20]]).astype(np.float32)
    got = nearest_distance(queries, samples)
    expected = cdist(queries.astype(np.float64), samples.astype(np.float64)).min(axis=1)
    assert got.shape == (queries.shape[0],) and np.isfinite(got).all()
    assert np.allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert np.all(got[-20:] == 0)  # a training sample itself is at distance 0, never NaN
    assert np.array_equal(nearest_distance(queries, samples, chunk=7), got)  # the chunk size changes no result


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
    assert back.pool == model.pool == 1
    record = model.to_dict()
    record["pool"] = 2
    assert Applicability.from_dict(record).pool == 2
    del record["pool"]  # a record written before the pooling: its samples are 1/4-resolution features
    assert Applicability.from_dict(record).pool == 1


@pytest.mark.parametrize("pool", [1, 2])
def test_dissimilarity_map_pools_searches_and_upsamples_to_the_input(pool):
    feats, folds = _clusters(d=12)
    model = fit_applicability(feats, folds, pool=pool)
    rng = np.random.default_rng(1)
    grid = torch.from_numpy(rng.normal(0, 4, size=(2, 12, 9, 7)).astype(np.float32))  # (B, D, h, w) at 1/4
    x = torch.ones(2, 5, 35, 27)  # an input of 35 x 27 px: its features were 9 x 7
    di = model.dissimilarity_map(grid, x)
    assert di.shape == (2, 35, 27) and di.dtype == torch.float32 and torch.isfinite(di).all()
    cells = torch.nn.functional.avg_pool2d(grid, pool, ceil_mode=True) if pool > 1 else grid
    b, d, h, w = cells.shape
    searched = model.dissimilarity(cells.permute(0, 2, 3, 1).reshape(-1, d).numpy())  # one search per cell
    expected = torch.nn.functional.interpolate(torch.from_numpy(searched).reshape(b, 1, h, w),
                                               scale_factor=4 * pool, mode="bilinear", align_corners=False)
    assert torch.equal(di, expected[:, 0, :35, :27])
    assert float(di.min()) >= 0


def test_pool_inputs_averages_the_valid_pixels_of_each_cell():
    x = torch.arange(2 * 10 * 10, dtype=torch.float32).reshape(1, 2, 10, 10) + 1
    x[:, :, 0, 0] = 0  # a nodata pixel (all bands zero) does not pull its cell towards zero
    x[:, :, 8:, 8:] = 0  # the partial edge cell of the last row and column: all nodata
    cells = pool_inputs(x, 4)
    assert cells.shape == (1, 2, 3, 3)
    assert torch.allclose(cells[0, :, 0, 0], x[0, :, :4, :4].sum((1, 2)) / 15)
    assert torch.allclose(cells[0, :, 1, 2], x[0, :, 4:8, 8:].mean((1, 2)))
    assert torch.equal(cells[0, :, 2, 2], torch.zeros(2))


def test_input_space_flags_ground_whose_features_look_familiar():
    """A record with an input space: the DI is the larger of the two, the input's rescaled to the feature threshold."""
    feats, folds = _clusters(d=12)
    inputs, _ = _clusters(d=6, seed=3)
    model = fit_applicability(feats, folds, pool=1)
    model.inputs = fit_applicability(inputs, folds, pool=4)
    rng = np.random.default_rng(2)
    familiar_feats = torch.from_numpy(_clusters(d=12, seed=0, n=16)[0].T.reshape(1, 12, 4, 4).copy())
    familiar_in = _clusters(d=6, seed=3, n=16)[0]  # one input vector per 4 x 4 pixel cell
    x = torch.from_numpy(np.kron(familiar_in.T.reshape(1, 6, 4, 4), np.ones((4, 4), np.float32)))  # (1, 6, 16, 16)
    di = model.dissimilarity_map(familiar_feats, x)
    assert float((di <= model.threshold).float().mean()) > 0.9
    strange = x + torch.from_numpy(rng.normal(15, 1, size=(1, 6, 1, 1)).astype(np.float32))  # another sensor
    di_strange = model.dissimilarity_map(familiar_feats, strange)
    assert float((di_strange > model.threshold).float().mean()) > 0.99
    assert torch.all(di_strange >= di - 1e-6)  # the features alone say "familiar": the input decides
    back = Applicability.from_dict(model.to_dict())
    assert back.inputs is not None and back.inputs.pool == 4
    assert torch.equal(back.dissimilarity_map(familiar_feats, strange), di_strange)
    assert "inputs" not in fit_applicability(feats, folds).to_dict()  # records without one stay as they were


def test_one_fold_or_nonfinite_features_are_refused():
    feats, folds = _clusters()
    with pytest.raises(InputError, match="two tiles"):
        fit_applicability(feats, np.zeros_like(folds))
    feats[3, 2] = np.inf
    with pytest.raises(InputError, match="non-finite"):
        fit_applicability(feats, folds)
