"""Pure mapping geometry: blocks with halos over the window grid, and blending weights.

Everything here is in pixels of the (north-up) raster grid and has no I/O, so a block plan can be
computed on one machine and its blocks predicted anywhere (a thread, a process, a Dask worker).

The window grid is global and is the raster layer's one grid rule
(:func:`dunemap.raster.geometry.window_starts`): a window never extends past the raster (on a raster
smaller than the window the window shrinks to the raster). Blocks are square, tile-aligned pieces
of the output. A block owns the windows that start in its core and predicts them once; the part of
its windows beyond its core (its halo, to the right and below) is handed to the blocks there, so
no window is ever predicted twice and the blend of a pixel is the same as in one global pass.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np

from dunemap.errors import ConfigError
from dunemap.raster.geometry import Box, window_extent, window_starts
from dunemap.registry import choose


@dataclass(frozen=True)
class Block:
    """One unit of mapping work: the windows it owns and the output pixels it finishes.

    A block *owns* the global windows whose top-left pixel lies in its core, so every window is
    predicted exactly once. Its prediction covers its ``extent`` (the union of its windows), which
    can reach into the cores of the blocks to its right and below; a core is finished by summing
    the contributions of all ``contributors`` in ascending order.
    """

    index: int  # position in the plan (row-major over blocks); the resume journal records it
    core: Box  # output pixels this block finishes
    extent: Box | None  # union of its own windows: what it reads and predicts; None when it owns none
    windows: tuple[Box, ...]  # windows it owns, in global row-major order
    contributors: tuple[int, ...]  # blocks whose extent overlaps this core, ascending
    targets: tuple[int, ...]  # blocks whose core this block's extent overlaps, ascending


def _axis_segments(length: int, window: int, stride: int, block_size: int) -> list[tuple[int, int, list[int], int, int]]:
    """Per block along one axis: core start, core stop, owned window starts, extent start, extent stop."""
    starts = window_starts(length, window, stride)
    size = window_extent(length, window)
    segments = []
    for c0 in range(0, length, block_size):
        c1 = min(c0 + block_size, length)
        own = [s for s in starts if c0 <= s < c1]
        e0, e1 = (own[0], own[-1] + size) if own else (c0, c0)
        segments.append((c0, c1, own, e0, e1))
    return segments


def _axis_targets(links: list[list[int]]) -> list[list[int]]:
    """For each segment, the segments whose core its extent overlaps (ascending): ``links`` inverted."""
    targets: list[list[int]] = [[] for _ in links]
    for i, sources in enumerate(links):
        for j in sources:
            targets[j].append(i)
    return targets


def _axis_links(segments: list[tuple[int, int, list[int], int, int]]) -> list[list[int]]:
    """For each segment, the segments whose extent overlaps its core (ascending)."""
    return [
        [j for j, (_, _, own, e0, e1) in enumerate(segments) if own and e0 < c1 and e1 > c0]
        for (c0, c1, _, _, _) in segments
    ]


class BlockPlan(Sequence[Block]):
    """The blocks of a raster, row-major, each built when it is asked for from the per-axis segments.

    The plan holds one segment list per axis, so its memory grows with the blocks along a side, not with
    their product: a raster of a million blocks is planned at once and read one block at a time.
    """

    def __init__(self, height: int, width: int, window: int, stride: int, block_size: int) -> None:
        if block_size < 1:
            raise ConfigError(f"block size must be positive; got {block_size}")
        self.height, self.width, self.window = height, width, window
        self._rows = _axis_segments(height, window, stride, block_size)
        self._cols = _axis_segments(width, window, stride, block_size)
        self._row_in, self._col_in = _axis_links(self._rows), _axis_links(self._cols)
        self._row_out, self._col_out = _axis_targets(self._row_in), _axis_targets(self._col_in)

    def __len__(self) -> int:
        return len(self._rows) * len(self._cols)

    @overload
    def __getitem__(self, index: int) -> Block: ...

    @overload
    def __getitem__(self, index: slice) -> list[Block]: ...

    def __getitem__(self, index: int | slice) -> Block | list[Block]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"block {index} of a plan of {n}")
        index %= n
        n_cols = len(self._cols)
        bi, bj = divmod(index, n_cols)
        (r0, r1, rown, re0, re1), (c0, c1, cown, ce0, ce1) = self._rows[bi], self._cols[bj]
        wh, ww = window_extent(self.height, self.window), window_extent(self.width, self.window)
        windows = tuple(Box(r, c, wh, ww) for r in rown for c in cown)
        extent = Box(re0, ce0, re1 - re0, ce1 - ce0) if windows else None
        contributors = tuple(i * n_cols + j for i in self._row_in[bi] for j in self._col_in[bj]
                             if self._rows[i][2] and self._cols[j][2])
        targets = tuple(i * n_cols + j for i in self._row_out[bi] for j in self._col_out[bj]) if windows else ()
        return Block(index, Box(r0, c0, r1 - r0, c1 - c0), extent, windows, contributors, targets)

    def __iter__(self) -> Iterator[Block]:
        return (self[i] for i in range(len(self)))

    def window_count(self) -> int:
        """Windows of the whole plan, counted per axis: no block is built."""
        return sum(len(seg[2]) for seg in self._rows) * sum(len(seg[2]) for seg in self._cols)

    def block_window_count(self, index: int) -> int:
        """Windows block ``index`` owns, without building it."""
        bi, bj = divmod(index, len(self._cols))
        return len(self._rows[bi][2]) * len(self._cols[bj][2])

    def pending(self, done: set[int], band: int = 0) -> BlockSelection:
        """The blocks that own windows and are not in ``done``, in plan order or in vertical bands of ``band``
        block columns (:class:`BlockSelection`; lazy: nothing is built up front)."""
        return BlockSelection(self, done, band)

    def spans(self, axis: int) -> list[tuple[int, int]]:
        """The extent (start, stop) of each row (``axis`` 0) or column (1) of blocks that own windows, in order."""
        return [(e0, e1) for (_, _, own, e0, e1) in (self._rows, self._cols)[axis] if own]


class BlockSelection:
    """The blocks of a :class:`BlockPlan` that own windows, less those in ``done``: counted and iterated without
    building the others, so a plan of millions of blocks costs no memory to select from.

    The order is the plan's (row-major), or with ``band`` > 0 vertical bands of ``band`` block columns (of those
    that own windows), left to right, each row by row: a block's contributors (above and left) still come before
    it, so it is finished as soon as it is predicted, and the map's bytes are those of the plan order."""

    def __init__(self, plan: BlockPlan, done: set[int], band: int = 0) -> None:
        self.plan = plan
        self.done = set(done)
        n_cols = len(plan._cols)
        self._rows = [i for i, seg in enumerate(plan._rows) if seg[2]]  # segments that own window starts
        self._cols = [j for j, seg in enumerate(plan._cols) if seg[2]]
        self.band = band if band > 0 else max(len(self._cols), 1)
        rows, cols = set(self._rows), set(self._cols)
        done_owned = sum(1 for k in self.done if k // n_cols in rows and k % n_cols in cols)
        self._count = len(self._rows) * len(self._cols) - done_owned

    def __len__(self) -> int:
        return self._count

    def window_count(self) -> int:
        """Windows of the selected blocks, counted without building them (the plan's less those of ``done``)."""
        n = len(self.plan)
        return self.plan.window_count() - sum(self.plan.block_window_count(k) for k in self.done if 0 <= k < n)

    def __getitem__(self, index: int | slice) -> Block | list[Block]:
        """The ``index``-th selected block (or a list for a slice of non-negative bounds), found by iterating."""
        if isinstance(index, slice):
            return list(itertools.islice(self, index.start, index.stop, index.step))
        return next(itertools.islice(self, index, None))

    def __iter__(self) -> Iterator[Block]:
        n_cols = len(self.plan._cols)
        return (self.plan[i * n_cols + j] for b in range(0, len(self._cols), self.band) for i in self._rows
                for j in self._cols[b:b + self.band] if i * n_cols + j not in self.done)


def plan_blocks(height: int, width: int, window: int, stride: int, block_size: int) -> BlockPlan:
    """Split a ``height x width`` raster into square blocks of ``block_size`` output pixels.

    Blocks are listed row-major. Each owns the global windows starting in its core, so the plan
    predicts every window once; contributors of a block always precede it, so a row-major pass can
    finish each block as soon as it has been predicted. The plan is lazy (:class:`BlockPlan`).
    """
    return BlockPlan(height, width, window, stride, block_size)


def _gaussian_1d(n: int) -> np.ndarray:
    # sigma = n / 8 (as nnU-Net does): weight ~3e-4 at the window edge, never zero
    x = np.arange(n, dtype=np.float64) + 0.5 - n / 2.0
    return np.exp(-0.5 * (x / (n / 8.0)) ** 2)


def _cosine_1d(n: int) -> np.ndarray:
    # a Hann window sampled at pixel centres, so the edge weight is small but never zero
    return np.sin(np.pi * (np.arange(n, dtype=np.float64) + 0.5) / n) ** 2


def _uniform_1d(n: int) -> np.ndarray:
    # plain averaging of overlapping windows (the seed's design)
    return np.ones(n, dtype=np.float64)


BLEND_MODES: dict[str, Callable[[int], np.ndarray]] = {
    "gaussian": _gaussian_1d,
    "cosine": _cosine_1d,
    "uniform": _uniform_1d,
}

MIN_BLEND_WEIGHT = 1e-4  # relative floor so corners of edge windows never divide by ~0


def blend_weights(shape: tuple[int, int], mode: str = "gaussian") -> np.ndarray:
    """Separable (H, W) float32 weights, peak 1, for blending overlapping window probabilities."""
    fn = choose(BLEND_MODES, mode, "blend mode")
    h, w = shape
    wy, wx = fn(h), fn(w)
    weights = np.outer(wy / wy.max(), wx / wx.max())
    return np.maximum(weights, MIN_BLEND_WEIGHT).astype(np.float32)
