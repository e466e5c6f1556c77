"""Pure building blocks of the synthesiser: noise fields, windows, wind frames and object rendering."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dunemap.synth.fields import Window, grow, noise_field, tile_windows, wind_frame
from dunemap.synth.scatter import jittered_grid, render_max


def test_noise_field_window_is_a_crop_of_the_whole_scene():
    shape = (90, 70)
    field = noise_field(shape, 7.0, np.random.default_rng(1), octaves=3)
    whole = field.sample(Window(0, 0, *shape))
    part = field.sample(Window(13, 21, 40, 30))
    np.testing.assert_allclose(part, whole[13:53, 21:51], rtol=0, atol=1e-5)
    assert whole.dtype == np.float32


def test_noise_field_has_unit_scale_and_its_feature_size():
    shape = (256, 256)
    fine = noise_field(shape, 4.0, np.random.default_rng(0)).sample(Window(0, 0, *shape))
    coarse = noise_field(shape, 32.0, np.random.default_rng(0)).sample(Window(0, 0, *shape))
    assert 0.7 < fine.std() < 1.3
    # Neighbouring pixels of the coarse field are far more alike than those of the fine field.
    def lag1(a: np.ndarray) -> float:
        return float(np.corrcoef(a[:, :-1].ravel(), a[:, 1:].ravel())[0, 1])
    assert lag1(coarse) > 0.99 > lag1(fine) > 0.5


def test_tile_windows_cover_the_scene_exactly_once():
    shape = (300, 170)
    count = np.zeros(shape, int)
    for w in tile_windows(shape, 128):
        count[w.slices] += 1
    assert (count == 1).all()
    assert grow(Window(0, 100, 50, 70), 8, shape) == Window(0, 92, 58, 78)


@pytest.mark.parametrize("toward, expected", [(0.0, (0.0, -1.0)), (90.0, (1.0, 0.0)), (180.0, (0.0, 1.0))])
def test_wind_frame_u_grows_downwind(toward, expected):
    # Moving one pixel in the downwind direction (dx east, dy south) adds one to u and nothing to v.
    x0, y0 = np.float32(5.0), np.float32(5.0)
    dx, dy = expected
    u0, v0 = wind_frame(x0, y0, toward)
    u1, v1 = wind_frame(x0 + np.float32(dx), y0 + np.float32(dy), toward)
    assert math.isclose(float(u1 - u0), 1.0, abs_tol=1e-5)
    assert math.isclose(float(v1 - v0), 0.0, abs_tol=1e-5)


def _disc(dx, dy, a):
    return (np.clip(1.0 - np.hypot(dx, dy) / a["radius"], 0.0, 1.0),)


def test_render_max_equals_a_brute_force_loop_over_objects():
    shape = (60, 80)
    grid = jittered_grid(shape, 12.0, np.random.default_rng(3), density=0.7)
    radius = np.random.default_rng(4).uniform(3.0, 11.0, grid.shape)
    grid = grid.with_objects(reach=radius, radius=radius)
    (fast,) = render_max(Window(0, 0, *shape), grid, _disc)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]] + 0.5
    slow = np.zeros(shape)
    for i, j in zip(*np.nonzero(grid.present)):
        d = np.hypot(xx - grid.cx[i, j], yy - grid.cy[i, j])
        slow = np.maximum(slow, np.clip(1.0 - d / radius[i, j], 0.0, 1.0))
    np.testing.assert_allclose(fast, slow, atol=1e-5)
    assert grid.count > 10
