"""Pure window geometry: window grids, block plans with halos, blending weights."""

from __future__ import annotations

import numpy as np
import pytest

from dunemap.errors import ConfigError
from dunemap.mapping.windows import BLEND_MODES, blend_weights, plan_blocks
from dunemap.raster.geometry import Box, window_count, window_extent, window_starts


@pytest.mark.parametrize(
    ("length", "window", "stride", "expected"),
    [
        (100, 100, 50, [0]),
        (60, 100, 50, [0]),
        (200, 100, 50, [0, 50, 100]),
        (230, 100, 50, [0, 50, 100, 130]),
        (1000, 512, 448, [0, 448, 488]),
        (1, 64, 32, [0]),
    ],
)
def test_window_starts(length: int, window: int, stride: int, expected: list[int]) -> None:
    assert window_starts(length, window, stride) == expected
    assert window_count(length, window, stride) == len(expected)


@pytest.mark.parametrize("length", [1, 31, 64, 65, 97, 200, 513, 1000])
@pytest.mark.parametrize(("window", "stride"), [(64, 64), (64, 48), (64, 1), (100, 30)])
def test_windows_cover_the_axis_exactly_and_stay_inside(length: int, window: int, stride: int) -> None:
    starts = window_starts(length, window, stride)
    size = window_extent(length, window)
    covered = np.zeros(length, dtype=int)
    for s in starts:
        assert 0 <= s and s + size <= length
        covered[s : s + size] += 1
    assert covered.min() >= 1
    assert starts == sorted(set(starts))
    assert len(starts) == window_count(length, window, stride)


def test_bad_geometry_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="stride 65 exceeds window 64"):
        window_starts(100, 64, 65)
    with pytest.raises(ConfigError, match="positive"):
        window_starts(0, 64, 32)
    with pytest.raises(ConfigError, match="block size"):
        plan_blocks(10, 10, 4, 4, 0)


def test_box_intersection_and_relative() -> None:
    a, b = Box(10, 20, 30, 40), Box(25, 50, 100, 100)
    assert a.intersection(b) == Box(25, 50, 15, 10)
    assert a.intersection(Box(40, 0, 5, 5)) is None  # touching edges do not overlap
    assert b.relative_to(a) == Box(15, 30, 100, 100)
    assert a.slices() == (slice(10, 40), slice(20, 60))


@pytest.mark.parametrize(("height", "width", "window", "stride", "block"),
                         [(256, 256, 64, 32, 32), (200, 150, 64, 48, 64), (97, 131, 64, 40, 48), (40, 30, 64, 32, 16),
                          (1000, 700, 512, 448, 256), (1000, 1000, 512, 448, 2048), (300, 300, 100, 10, 16)])
def test_block_plan_owns_every_window_once_and_links_contributors(height, width, window, stride, block) -> None:
    blocks = plan_blocks(height, width, window, stride, block)
    rows, cols = window_starts(height, window, stride), window_starts(width, window, stride)
    wh, ww = window_extent(height, window), window_extent(width, window)
    all_windows = [Box(r, c, wh, ww) for r in rows for c in cols]
    owner = np.full((height, width), -1)
    owned: list[Box] = []
    for i, b in enumerate(blocks):
        assert b.index == i
        core = owner[b.core.slices()]
        assert (core == -1).all(), "cores overlap"
        core[...] = i
        for w in b.windows:
            assert b.core.row <= w.row < b.core.row_stop and b.core.col <= w.col < b.core.col_stop
        owned.extend(b.windows)
        if b.windows:  # the extent is the bounding box of the owned windows
            assert b.extent == Box(b.windows[0].row, b.windows[0].col,
                                   max(w.row_stop for w in b.windows) - b.windows[0].row,
                                   max(w.col_stop for w in b.windows) - b.windows[0].col)
        else:
            assert b.extent is None and b.targets == ()
    assert sorted(owned, key=lambda w: (w.row, w.col)) == all_windows, "every window is owned exactly once"
    assert blocks.window_count() == len(all_windows)  # counted per axis, no block built
    assert [blocks.block_window_count(b.index) for b in blocks] == [len(b.windows) for b in blocks]
    done = {b.index for b in blocks if b.index % 3 == 0} | {len(blocks) + 5}  # an index past the plan counts 0
    assert blocks.pending(done).window_count() == sum(len(b.windows) for b in blocks if b.index not in done)
    assert (owner >= 0).all(), "some pixels belong to no block"
    for b in blocks:
        # contributors: exactly the blocks whose extent overlaps this core; all come earlier in row-major order
        expected = [o.index for o in blocks if o.extent is not None and o.extent.intersection(b.core) is not None]
        assert list(b.contributors) == expected and expected and max(expected) <= b.index
        assert list(b.targets) == [t.index for t in blocks if b.index in t.contributors]
        # every pixel of the core is covered by a window of some contributor
        cover = np.zeros(b.core.shape, dtype=bool)
        for c in b.contributors:
            for w in blocks[c].windows:
                inter = w.intersection(b.core)
                if inter is not None:
                    r = inter.relative_to(b.core)
                    cover[r.row : r.row_stop, r.col : r.col_stop] = True
        assert cover.all()


@pytest.mark.parametrize("mode", sorted(BLEND_MODES))
def test_blend_weights_are_positive_symmetric_and_peak_at_one(mode: str) -> None:
    w = blend_weights((64, 48), mode)
    assert w.shape == (64, 48) and w.dtype == np.float32
    assert w.min() > 0 and np.isclose(w.max(), 1.0)
    np.testing.assert_allclose(w, w[::-1, :])
    np.testing.assert_allclose(w, w[:, ::-1])
    if mode != "uniform":
        assert w[32, 24] > 100 * w[0, 0], "edges must weigh far less than the centre"


def test_blend_mode_registry_lists_valid_modes() -> None:
    with pytest.raises(ConfigError, match="unknown blend mode 'box'; valid: cosine, gaussian, uniform"):
        blend_weights((8, 8), "box")

