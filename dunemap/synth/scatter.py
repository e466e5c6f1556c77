"""Jittered-grid object fields: place discrete landforms (barchans, stars, mounds) and render them vectorised.

At most one object sits in each cell of a square grid covering the scene, and an object reaches at
most one cell spacing from its centre, so a pixel only meets the objects of its own and the eight
neighbouring cells. Rendering runs nine vectorised passes over a window (no per-object or per-pixel
Python loop): each pass gathers every pixel's candidate, evaluates the shape function on the
pixels within the candidate's reach and keeps the element-wise maximum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from dunemap.synth.fields import Window

ShapeFn = Callable[[np.ndarray, np.ndarray, dict[str, np.ndarray]], tuple[np.ndarray, ...]]


@dataclass(frozen=True)
class ObjectGrid:
    """Objects on a padded jittered grid: cell (i, j) covers scene rows ``[(i-1)s, is)``, columns likewise."""

    spacing: float  # cell size in pixels
    cx: np.ndarray  # (gh, gw) object centre column, scene pixels
    cy: np.ndarray  # (gh, gw) object centre row
    present: np.ndarray  # (gh, gw) bool
    reach: np.ndarray  # (gh, gw) radius beyond which the object is zero, pixels (<= spacing)
    attrs: dict[str, np.ndarray] = field(default_factory=dict)  # per-object parameters, each (gh, gw)

    @property
    def shape(self) -> tuple[int, int]:
        return self.present.shape

    @property
    def count(self) -> int:
        return int(self.present.sum())

    def with_objects(self, reach: np.ndarray, **attrs: np.ndarray) -> "ObjectGrid":
        """A copy holding the objects' reach (clipped to the spacing) and parameters."""
        reach = np.minimum(np.asarray(reach, np.float32), np.float32(self.spacing))
        return replace(self, reach=reach, attrs={k: np.asarray(v, np.float32) for k, v in attrs.items()})


def grid_shape(scene_shape: tuple[int, int], spacing: float) -> tuple[int, int]:
    """Cells of the padded grid (one extra ring so objects just outside the scene still overlap it)."""
    return int(math.ceil(scene_shape[0] / spacing)) + 2, int(math.ceil(scene_shape[1] / spacing)) + 2


def jittered_grid(
    scene_shape: tuple[int, int],
    spacing: float,
    rng: np.random.Generator,
    density: float = 1.0,
    jitter: float = 0.8,
) -> ObjectGrid:
    """Draw object centres: one per cell with probability ``density``, displaced by up to ``jitter``/2 cells."""
    gh, gw = grid_shape(scene_shape, spacing)
    jy = rng.uniform(-0.5, 0.5, (gh, gw)) * jitter
    jx = rng.uniform(-0.5, 0.5, (gh, gw)) * jitter
    rows = np.arange(gh, dtype=np.float64)[:, None] - 0.5
    cols = np.arange(gw, dtype=np.float64)[None, :] - 0.5
    cy = ((rows + jy) * spacing).astype(np.float32)
    cx = ((cols + jx) * spacing).astype(np.float32)
    present = rng.random((gh, gw)) < density
    reach = np.full((gh, gw), spacing, dtype=np.float32)
    return ObjectGrid(spacing=float(spacing), cx=cx, cy=cy, present=present, reach=reach)


def render_max(window: Window, grid: ObjectGrid, shape_fn: ShapeFn, n_out: int = 1) -> tuple[np.ndarray, ...]:
    """Evaluate ``shape_fn(dx, dy, attrs)`` against each pixel's nine candidate objects; element-wise max.

    ``dx``/``dy`` are 1-D pixel offsets from a candidate's centre (columns, rows) for the pixels
    within its reach, and ``attrs`` holds that candidate's parameters gathered per pixel.
    ``shape_fn`` returns ``n_out`` arrays, each >= 0; pixels reached by no object get 0.
    """
    x, y = window.grid()
    s = np.float32(grid.spacing)
    gh, gw = grid.shape
    w = window.width
    row_cell = np.floor((np.arange(window.row_off, window.row_off + window.height) + 0.5) / s).astype(np.intp) + 1
    col_cell = np.floor((np.arange(window.col_off, window.col_off + window.width) + 0.5) / s).astype(np.intp) + 1
    outs = [np.zeros(window.height * window.width, np.float32) for _ in range(n_out)]
    for dr in (-1, 0, 1):
        ri = np.clip(row_cell + dr, 0, gh - 1)
        for dc in (-1, 0, 1):
            ci = np.clip(col_cell + dc, 0, gw - 1)
            dx = x - grid.cx[ri[:, None], ci[None, :]]
            dy = y - grid.cy[ri[:, None], ci[None, :]]
            reach = grid.reach[ri[:, None], ci[None, :]]
            hit = grid.present[ri[:, None], ci[None, :]] & (dx * dx + dy * dy < reach * reach)
            flat = np.flatnonzero(hit)
            if flat.size == 0:
                continue
            gr, gc = ri[flat // w], ci[flat % w]
            attrs = {k: v[gr, gc] for k, v in grid.attrs.items()}
            vals = shape_fn(dx.reshape(-1)[flat], dy.reshape(-1)[flat], attrs)
            for out, val in zip(outs, vals, strict=True):
                out[flat] = np.maximum(out[flat], val)
    return tuple(o.reshape(window.shape) for o in outs)


def local_frame(dx: np.ndarray, dy: np.ndarray, sin_t: np.ndarray, cos_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-object wind frame: ``u`` toward the object's azimuth ``t`` (given by its sine/cosine), ``v`` to its right."""
    return dx * sin_t - dy * cos_t, dx * cos_t + dy * sin_t
