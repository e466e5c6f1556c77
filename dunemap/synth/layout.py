"""Class layout of a scene: a domain-warped Voronoi partition into contiguous landform regions.

Cells of a jittered seed grid get a class drawn from the region's mixture; warping the pixel
coordinates with fractal noise before the nearest-seed search gives the regions irregular,
crenulated boundaries instead of straight Voronoi edges.
"""

from __future__ import annotations

import numpy as np

from dunemap.synth.fields import Window, noise_field
from dunemap.synth.scatter import jittered_grid

_JITTER = 0.6  # seed displacement as a fraction of a cell (keeps the nearest seed within the 3x3 block)


def class_layout(
    shape: tuple[int, int],
    weights: list[float] | np.ndarray,
    rng: np.random.Generator,
    region_px: float = 320.0,
    warp: float = 0.35,
) -> np.ndarray:
    """Partition a (H, W) scene into landform regions about ``region_px`` pixels across; returns uint8 class ids.

    ``weights[c]`` is the probability that a Voronoi cell is class ``c``; ``warp`` is the boundary
    displacement as a fraction of ``region_px``.
    """
    p = np.asarray(weights, dtype=np.float64)
    p = p / p.sum()
    seeds = jittered_grid(shape, region_px, rng, density=1.0, jitter=_JITTER)
    classes = rng.choice(len(p), size=seeds.present.shape, p=p).astype(np.uint8)
    h, w = shape
    amp = np.float32(warp * region_px)
    whole = Window(0, 0, h, w)
    yw = np.arange(h, dtype=np.float32)[:, None] + 0.5 + amp * noise_field(shape, 0.5 * region_px, rng, 5).sample(whole)
    xw = np.arange(w, dtype=np.float32)[None, :] + 0.5 + amp * noise_field(shape, 0.5 * region_px, rng, 5).sample(whole)
    s = np.float32(region_px)
    gh, gw = classes.shape
    # Seeds sit in the middle 60 % of their cells, so a point is at most 0.8*sqrt(2) = 1.13 cells from
    # its own cell's seed while seeds two cells away are over 1.2 cells off: the 3x3 block suffices.
    row_cell = np.clip(np.floor(yw / s).astype(np.intp) + 1, 0, gh - 1)
    col_cell = np.clip(np.floor(xw / s).astype(np.intp) + 1, 0, gw - 1)
    best = np.full(shape, np.inf, dtype=np.float32)
    label = np.zeros(shape, dtype=np.uint8)
    for dr in (-1, 0, 1):
        ri = np.clip(row_cell + dr, 0, gh - 1)
        for dc in (-1, 0, 1):
            ci = np.clip(col_cell + dc, 0, gw - 1)
            d2 = np.square(yw - seeds.cy[ri, ci]) + np.square(xw - seeds.cx[ri, ci])
            closer = d2 < best
            best = np.where(closer, d2, best)
            label = np.where(closer, classes[ri, ci], label)
    return label

