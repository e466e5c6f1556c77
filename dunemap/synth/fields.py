"""Scene-wide smooth random fields, pixel windows and wind coordinate frames for the landform generators.

Sizes are in pixels (10 m each) unless a name says otherwise. A :class:`NoiseField` is drawn once
for the whole scene and sampled on any window: sampling a window gives exactly the crop of
sampling the whole scene, so landforms can be rendered tile by tile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PIXEL_SIZE_M = 10.0  # AEF ground sampling distance; heights are in metres, distances in pixels
_BSPLINE_STD = 151.0 / 315.0  # std of 2-D B-spline-interpolated unit white noise: per-axis mean sum of squared weights
_PAD = 2  # lattice nodes before the first pixel


@dataclass(frozen=True)
class Window:
    """A pixel window of a scene: ``row_off``/``col_off`` of its top-left pixel and its size."""

    row_off: int
    col_off: int
    height: int
    width: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.row_off, self.row_off + self.height), slice(self.col_off, self.col_off + self.width)

    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Scene pixel-centre coordinates ``(x, y)`` (column, row) of this window, each (height, width) float32."""
        y = np.arange(self.row_off, self.row_off + self.height, dtype=np.float32) + np.float32(0.5)
        x = np.arange(self.col_off, self.col_off + self.width, dtype=np.float32) + np.float32(0.5)
        return np.broadcast_to(x[None, :], self.shape), np.broadcast_to(y[:, None], self.shape)


def tile_windows(shape: tuple[int, int], tile: int) -> list[Window]:
    """Cover a (H, W) scene with ``tile`` x ``tile`` windows, row-major; edge windows are cut to the scene."""
    h, w = shape
    return [Window(r, c, min(tile, h - r), min(tile, w - c)) for r in range(0, h, tile) for c in range(0, w, tile)]


def grow(win: Window, margin: int, shape: tuple[int, int]) -> Window:
    """``win`` grown by ``margin`` pixels on every side, clipped to the scene."""
    r0, c0 = max(win.row_off - margin, 0), max(win.col_off - margin, 0)
    r1 = min(win.row_off + win.height + margin, shape[0])
    c1 = min(win.col_off + win.width + margin, shape[1])
    return Window(r0, c0, r1 - r0, c1 - c0)


def _bspline_taps(offset: int, length: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Lattice indices (4, n) and cubic B-spline weights (4, n) for pixels ``offset .. offset+length-1``."""
    p = (np.arange(offset, offset + length, dtype=np.float64) + 0.5) / scale + _PAD
    base = np.floor(p)
    t = p - base
    w = np.stack([
        (1 - t) ** 3 / 6.0,
        (3 * t**3 - 6 * t**2 + 4) / 6.0,
        (-3 * t**3 + 3 * t**2 + 3 * t + 1) / 6.0,
        t**3 / 6.0,
    ]).astype(np.float32)
    idx = (base.astype(np.intp)[None, :] + np.arange(-1, 3)[:, None])
    return idx, w


@dataclass(frozen=True)
class NoiseField:
    """Band-limited noise over a whole scene: octaves of B-spline-interpolated white-noise lattices.

    Features are about ``scale`` pixels across; values have zero mean and roughly unit std.
    """

    lattices: tuple[np.ndarray, ...]
    scales: tuple[float, ...]
    weights: tuple[float, ...]  # per-octave amplitude, already divided by the total std

    def sample(self, win: Window) -> np.ndarray:
        """The field on ``win``, (height, width) float32."""
        out = np.zeros(win.shape, dtype=np.float32)
        for lattice, scale, weight in zip(self.lattices, self.scales, self.weights):
            ri, rw = _bspline_taps(win.row_off, win.height, scale)
            ci, cw = _bspline_taps(win.col_off, win.width, scale)
            rows = sum(rw[k][:, None] * lattice[ri[k], :] for k in range(4))  # (height, lattice cols)
            out += np.float32(weight) * sum(rows[:, ci[k]] * cw[k][None, :] for k in range(4))
        return out


def noise_field(
    shape: tuple[int, int], scale: float, rng: np.random.Generator, octaves: int = 1, gain: float = 0.5
) -> NoiseField:
    """Draw a scene-wide :class:`NoiseField`; with ``octaves`` > 1 it is fractal (each octave half the scale)."""
    lattices, scales, amps = [], [], []
    for i in range(octaves):
        s = max(float(scale) / 2**i, 1.0)
        gh = int(math.ceil(shape[0] / s)) + 2 * _PAD + 2
        gw = int(math.ceil(shape[1] / s)) + 2 * _PAD + 2
        lattices.append(rng.standard_normal((gh, gw)).astype(np.float32))
        scales.append(s)
        amps.append(gain**i)
    total = math.sqrt(sum(a * a for a in amps)) * _BSPLINE_STD
    return NoiseField(tuple(lattices), tuple(scales), tuple(a / total for a in amps))


def wind_frame(x: np.ndarray, y: np.ndarray, toward_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate pixel coordinates into a wind frame: ``u`` downwind, ``v`` crosswind (to the right of downwind).

    ``toward_deg`` is the azimuth the wind blows toward, clockwise from north (up = decreasing row).
    """
    t = math.radians(toward_deg)
    s, c = np.float32(math.sin(t)), np.float32(math.cos(t))
    return x * s - y * c, x * c + y * s


def smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    """Hermite step from 0 at ``edge0`` to 1 at ``edge1`` (float32; ``edge0 > edge1`` steps down)."""
    t = np.clip((x - np.float32(edge0)) / np.float32(edge1 - edge0), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32, copy=False)


def wrap_angle(a: np.ndarray) -> np.ndarray:
    """Wrap radians to [-pi, pi)."""
    return (a + np.float32(math.pi)) % np.float32(2 * math.pi) - np.float32(math.pi)
