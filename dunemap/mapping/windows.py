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

from dataclasses import dataclass
from typing import Callable

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
