"""Pure sliding-window geometry: pixel boxes, window grids, blocks with halos and blending weights.

Everything here is in pixels of the (north-up) raster grid and has no I/O, so a block plan can be
computed on one machine and its blocks predicted anywhere (a thread, a process, a Dask worker).

The window grid is global: window starts along an axis are ``0, stride, 2*stride, ...`` plus one
last window aligned to the raster's end, and a window never extends past the raster (on a raster
smaller than the window the window shrinks to the raster). Blocks are square, tile-aligned pieces
of the output. A block owns the windows that start in its core and predicts them once; the part of
its windows beyond its core (its halo, to the right and below) is handed to the blocks there, so
no window is ever predicted twice and the blend of a pixel is the same as in one global pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from dunemap.errors import ConfigError
from dunemap.registry import choose


@dataclass(frozen=True)
class Box:
    """A rectangle of pixels: ``rows [row, row + height)`` and ``cols [col, col + width)``."""

    row: int
    col: int
    height: int
    width: int

    @property
    def row_stop(self) -> int:
        return self.row + self.height

    @property
    def col_stop(self) -> int:
        return self.col + self.width

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    def slices(self) -> tuple[slice, slice]:
        """Index this box in an array whose origin is the raster's pixel (0, 0)."""
        return slice(self.row, self.row_stop), slice(self.col, self.col_stop)

    def relative_to(self, origin: Box) -> Box:
        """This box in the coordinates of an array whose pixel (0, 0) is ``origin``'s corner."""
        return Box(self.row - origin.row, self.col - origin.col, self.height, self.width)

    def intersection(self, other: Box) -> Box | None:
        """The overlap of two boxes, or None when they do not overlap."""
        r0, c0 = max(self.row, other.row), max(self.col, other.col)
        r1, c1 = min(self.row_stop, other.row_stop), min(self.col_stop, other.col_stop)
        if r1 <= r0 or c1 <= c0:
            return None
        return Box(r0, c0, r1 - r0, c1 - c0)


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


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows along an axis of ``length`` pixels.

    Starts are ``0, stride, 2 * stride, ...`` while a window fits, plus one last window aligned to
    the end when the regular grid leaves pixels uncovered. On an axis shorter than the window the
    only window starts at 0 (and is shortened to the axis by :func:`window_extent`).
    """
    if length < 1 or window < 1 or stride < 1:
        raise ConfigError(f"window geometry needs positive sizes; got length={length}, window={window}, stride={stride}")
    if stride > window:
        raise ConfigError(f"stride {stride} exceeds window {window}: pixels between windows would never be predicted")
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] + window < length:
        starts.append(length - window)
    return starts


def window_count(length: int, window: int, stride: int) -> int:
    """Number of windows along an axis: ``1`` if ``length <= window`` else ``ceil((length - window) / stride) + 1``."""
    if length <= window:
        return 1
    return math.ceil((length - window) / stride) + 1


def window_extent(length: int, window: int) -> int:
    """Window size actually used along an axis: the window, or the axis when it is shorter."""
    return min(length, window)


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


def _axis_links(segments: list[tuple[int, int, list[int], int, int]]) -> list[list[int]]:
    """For each segment, the segments whose extent overlaps its core (ascending)."""
    return [
        [j for j, (_, _, own, e0, e1) in enumerate(segments) if own and e0 < c1 and e1 > c0]
        for (c0, c1, _, _, _) in segments
    ]


def plan_blocks(height: int, width: int, window: int, stride: int, block_size: int) -> list[Block]:
    """Split a ``height x width`` raster into square blocks of ``block_size`` output pixels.

    Blocks are listed row-major. Each owns the global windows starting in its core, so the plan
    predicts every window once; contributors of a block always precede it, so a row-major pass can
    finish each block as soon as it has been predicted.
    """
    if block_size < 1:
        raise ConfigError(f"block size must be positive; got {block_size}")
    rows = _axis_segments(height, window, stride, block_size)
    cols = _axis_segments(width, window, stride, block_size)
    row_in, col_in = _axis_links(rows), _axis_links(cols)
    row_out = [[i for i, links in enumerate(row_in) if j in links] for j in range(len(rows))]
    col_out = [[i for i, links in enumerate(col_in) if j in links] for j in range(len(cols))]
    n_cols = len(cols)
    blocks: list[Block] = []
    for bi, (r0, r1, rown, re0, re1) in enumerate(rows):
        for bj, (c0, c1, cown, ce0, ce1) in enumerate(cols):
            windows = tuple(Box(r, c, window_extent(height, window), window_extent(width, window)) for r in rown for c in cown)
            extent = Box(re0, ce0, re1 - re0, ce1 - ce0) if windows else None
            contributors = tuple(
                i * n_cols + j for i in row_in[bi] for j in col_in[bj] if rows[i][2] and cols[j][2]
            )
            targets = tuple(i * n_cols + j for i in row_out[bi] for j in col_out[bj]) if windows else ()
            blocks.append(Block(len(blocks), Box(r0, c0, r1 - r0, c1 - c0), extent, windows, contributors, targets))
    return blocks


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
