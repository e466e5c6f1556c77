"""Height-field generators for the ten dune classes, one per catalog class id, at 10 m pixels.

A generator draws a landform's scene-wide parameters and random fields (spacing, heights, object
positions, sinuosity noise) once and returns a renderer; the renderer turns any window of the
scene into heights in metres plus the cover the landform itself brings: its own loose sand (dune
bodies, sheets), vegetation (shrubs, stabilised arms) and wetness (deflation hollows). The ground
between dunes is not the landform's business: the scene lays one shared ground cover (gravel, sand
patches, playas, grass) under every class, so flat pixels of different classes look alike. Rendering a window equals cropping the whole-scene rendering, so scenes are
built tile by tile. Orientation follows the scene's wind: slip faces and barchan horns face the
resultant drift direction (RDD), linear dunes run parallel to it, transverse ridges across it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from dunemap.synth.fields import (
    PIXEL_SIZE_M,
    Window,
    noise_field,
    smoothstep,
    wind_frame,
    wrap_angle,
)
from dunemap.synth.scatter import jittered_grid, local_frame, render_max
from dunemap.synth.wind import Wind

REPOSE_SLOPE = math.tan(math.radians(33.0))  # angle of repose of dry sand (slip faces)
SLIP_DROP_M = REPOSE_SLOPE * PIXEL_SIZE_M  # metres a slip face drops per pixel

# Default catalog class ids (dunemap.knowledge.catalog); 255 marks nodata.
INTERDUNE, CRESCENTIC, BARCHANOID, LINEAR, STAR, DOME, PARABOLIC, REVERSING, SAND_SHEET, NEBKHA = range(10)
NUM_CLASSES = 10
NODATA_LABEL = 255


# Loose-sand cover of a sand sheet, and the most the shared ground may carry. Flat ground under more loose
# sand than a sand sheet's thinnest *is* a sand sheet to a geomorphologist, so the ground (labelled interdune
# between fields) stays below the sheet's range: the two classes differ in cover, as they do in the field.
SAND_SHEET_COVER = (0.5, 0.9)
GROUND_SAND_MAX = 0.45


@dataclass(frozen=True)
class LandformStyle:
    """Region-level modifiers of every landform (from the region preset)."""

    relief: float = 1.0  # multiplier on dune heights
    dune_veg: float = 0.05  # vegetation cover on dune sand, 0..1 (applied by the scene)
    ground_veg: float = 0.05  # mean vegetation cover of the shared ground, 0..1 (applied by the scene)
    ground_sand: float = 0.2  # mean loose-sand cover of the shared ground; the rest is gravel / rock / clay


@dataclass(frozen=True)
class Surface:
    """A rendered window: heights in metres and the landform's own cover fractions in 0..1, each (H, W) float32."""

    height: np.ndarray
    sand: np.ndarray
    veg: np.ndarray
    wet: np.ndarray


Renderer = Callable[[Window], Surface]
Generator = Callable[[tuple[int, int], Wind, LandformStyle, np.random.Generator], Renderer]


def _f32(x: float) -> np.float32:
    return np.float32(x)


def _surface(height: np.ndarray, sand: np.ndarray | float, veg: np.ndarray | float,
             wet: np.ndarray | float = 0.0) -> Surface:
    shape = height.shape

    def cover(a: np.ndarray | float) -> np.ndarray:
        return np.clip(np.broadcast_to(np.asarray(a, np.float32), shape), 0.0, 1.0).astype(np.float32)

    return Surface(height=height.astype(np.float32, copy=False), sand=cover(sand), veg=cover(veg), wet=cover(wet))


def _orientation(grid_shape: tuple[int, int], mean_deg: float, std_deg: float, rng: np.random.Generator) -> dict:
    t = np.radians(mean_deg + rng.normal(0.0, std_deg, grid_shape))
    return {"sin": np.sin(t), "cos": np.cos(t)}


# ----------------------------------------------------------------------------------------- 0 interdune


def interdune(scene: tuple[int, int], wind: Wind, style: LandformStyle, rng: np.random.Generator) -> Renderer:
    """Flat interdune ground (gravel, rock, playa): sub-metre roughness and gentle swells, no dunes."""
    rough = noise_field(scene, 6.0, rng, octaves=3)
    swell = noise_field(scene, 70.0, rng)

    def render(win: Window) -> Surface:
        height = _f32(0.12) * rough.sample(win) + _f32(0.6) * swell.sample(win)
        return _surface(height, 0.0, 0.0)

    return render


# ---------------------------------------------------------------------------------------- 1 crescentic


def _barchan(dx: np.ndarray, dy: np.ndarray, a: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    u, v = local_frame(dx, dy, a["sin"], a["cos"])
    w, hmax = a["width"], a["height"]
    yn2 = np.square(v / (0.5 * w))
    s = np.sqrt(np.clip(1.0 - yn2, 0.0, 1.0))
    back = w * (-0.62 * s + 0.5 * yn2)  # upwind toe: convex stoss arc running out to the horn tips
    front = w * (0.06 + 0.44 * yn2)  # foot of the slip face, swept downwind into the horns
    hm = hmax * s**0.7
    crest = np.maximum(front - hm / SLIP_DROP_M, back + 0.4 * (front - back))  # brink of the slip face
    t_stoss = np.clip((u - back) / np.maximum(crest - back, 1e-3), 0.0, 1.0)
    t_lee = np.clip((front - u) / np.maximum(front - crest, 1e-3), 0.0, 1.0)
    h = np.where(u <= crest, hm * np.sin(_f32(math.pi / 2) * t_stoss) ** 0.8, hm * t_lee)
    inside = (yn2 < 1.0) & (u >= back) & (u <= front)
    return (np.where(inside, h, _f32(0.0)),)


def crescentic(scene: tuple[int, int], wind: Wind, style: LandformStyle, rng: np.random.Generator) -> Renderer:
    """Isolated barchans 50-300 m wide on gravel: crescents with horns pointing downwind."""
    spacing = rng.uniform(30.0, 46.0)
    grid = jittered_grid(scene, spacing, rng, density=rng.uniform(0.5, 0.8), jitter=0.7)
    g = grid.shape
    width = np.exp(rng.uniform(math.log(5.0), math.log(30.0), g))
    grid = grid.with_objects(
        reach=0.72 * width + 1.0,
        width=width,
        height=width * PIXEL_SIZE_M * rng.uniform(0.08, 0.11, g) * style.relief,
        **_orientation(g, wind.drift_deg, 0.5 * wind.jitter_deg(), rng),
    )
    stringers = noise_field(scene, 10.0, rng)
    rough = noise_field(scene, 6.0, rng, octaves=3)

    def render(win: Window) -> Surface:
        (height,) = render_max(win, grid, _barchan)
        on_dune = smoothstep(0.2, 1.5, height)
        streak = smoothstep(0.6, 1.6, stringers.sample(win))  # thin sand stringers on the gravel
        return _surface(height + _f32(0.1) * rough.sample(win), np.maximum(on_dune, 0.5 * streak), 0.0)

    return render


# ------------------------------------------------------------------------------- 2 barchanoid / transverse


def barchanoid(scene: tuple[int, int], wind: Wind, style: LandformStyle, rng: np.random.Generator) -> Renderer:
    """Crescentic (barchanoid / transverse) ridges 200-400 m apart, across the wind, with sinuous cuspate crests."""
    lam = rng.uniform(20.0, 40.0)
    h0 = lam * PIXEL_SIZE_M * rng.uniform(0.045, 0.07) * style.relief
    toward = wind.drift_deg + rng.normal(0.0, 4.0)
    seg = lam * rng.uniform(1.6, 3.0)  # length of one crescentic crest segment
    cusp_depth = lam * rng.uniform(0.15, 0.35)
    sinuosity = lam * (0.12 + 0.25 * wind.variability)
    phase_f = noise_field(scene, 1.5 * lam, rng)
    sinuous_f = noise_field(scene, 2.5 * lam, rng)
    amp_f = noise_field(scene, 3.0 * lam, rng)
    rough = noise_field(scene, 5.0, rng, octaves=2)
    lee = float(np.clip(h0 / SLIP_DROP_M / lam, 0.06, 0.3))

    def render(win: Window) -> Surface:
        u, v = wind_frame(*win.grid(), toward)
        cusp = cusp_depth * (1.0 - np.abs(np.sin(_f32(math.pi) * v / _f32(seg) + _f32(1.2) * phase_f.sample(win))))
        amp = _f32(h0) * np.clip(0.8 + 0.25 * amp_f.sample(win), 0.35, None)
        phi = (u - cusp - _f32(sinuosity) * sinuous_f.sample(win)) / _f32(lam)
        f = phi - np.floor(phi)
        prof = np.where(f < 1.0 - lee, np.sin(_f32(math.pi / 2) * f / _f32(1.0 - lee)) ** 1.3, (1.0 - f) / _f32(lee))
        height = amp * prof
        sand = 0.5 + 0.5 * smoothstep(0.05, 0.3, prof)  # troughs may bare the ground
        return _surface(height + _f32(0.08) * rough.sample(win), sand, 0.0)

    return render


# ------------------------------------------------------------------------------------------- 3 linear


def linear(scene: tuple[int, int], wind: Wind, style: LandformStyle, rng: np.random.Generator) -> Renderer:
    """Linear (seif) dunes 0.5-1.3 km apart, parallel to the RDD: long sharp sinuous crests, gravel corridors."""
    lam = rng.uniform(50.0, 130.0)
    h0 = lam * PIXEL_SIZE_M * rng.uniform(0.022, 0.04) * style.relief
    toward = wind.drift_deg + rng.normal(0.0, 4.0)
    half = lam * rng.uniform(0.24, 0.34)
    flip = rng.uniform(5.0, 9.0) * half  # along-crest wavelength of the alternating slip face
    sinuosity = lam * (0.07 + 0.12 * wind.variability)
    warp_f = noise_field(scene, 2.2 * lam, rng)
    side_f = noise_field(scene, lam, rng)
    along_f = noise_field(scene, 4.0 * lam, rng)
    ends_f = noise_field(scene, 3.0 * lam, rng)
    rough = noise_field(scene, 6.0, rng, octaves=3)

    def render(win: Window) -> Surface:
        u, v = wind_frame(*win.grid(), toward)
        psi = (v + _f32(sinuosity) * warp_f.sample(win)) / _f32(lam)
        d = (psi - np.floor(psi) - 0.5) * _f32(lam)  # signed crosswind distance to the crest line
        # The steeper (slip) side alternates along the crest as the two wind modes take turns.
        side = np.sin(_f32(2 * math.pi) * u / _f32(flip) + _f32(0.8) * side_f.sample(win))
        width = _f32(half) * (1.0 - 0.4 * side * np.sign(d))
        prof = np.clip(1.0 - np.abs(d) / width, 0.0, 1.0) ** 1.5
        along = np.clip(0.75 + 0.3 * along_f.sample(win), 0.25, None)
        ends = smoothstep(-1.9, -1.3, ends_f.sample(win))  # occasional terminations and gaps
        height = _f32(h0) * along * ends * prof
        on_dune = smoothstep(0.5, 3.0, height)
        apron = 0.4 * np.clip(1.0 - np.abs(d) / _f32(0.5 * lam), 0.0, 1.0)  # sand thinning into the corridors
        return _surface(height + _f32(0.1) * rough.sample(win), np.maximum(on_dune, apron), 0.0)

    return render


# --------------------------------------------------------------------------------------------- 4 star

_MAX_ARMS = 5


def _star(dx: np.ndarray, dy: np.ndarray, a: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    big_r, hmax = a["radius"], a["height"]
    r = np.hypot(dx, dy)
    theta = np.arctan2(dy, dx)
    rn = r / big_r
    h = np.maximum(hmax * np.clip(1.0 - rn / 0.38, 0.0, 1.0) ** 1.3, 0.28 * hmax * np.clip(1.0 - rn, 0.0, 1.0) ** 2)
    twist = a["twist"] * rn
    for k in range(_MAX_ARMS):
        length = a[f"len{k}"]
        delta = wrap_angle(theta - a[f"arm{k}"] - twist)
        perp = r * np.abs(np.sin(delta))
        t = np.clip(r / length, 0.0, 1.0)
        width = 0.24 * big_r * (1.0 - 0.55 * t) + 1.0
        ridge = np.clip(1.0 - perp / width, 0.0, 1.0) ** 1.3 * (np.cos(delta) > 0)
        arm = 0.78 * hmax * (1.0 - t) ** 0.8 * ridge * (a["narms"] > k)
        h = np.maximum(h, arm)
    return (h * (rn < 1.0),)


def star(scene: tuple[int, int], wind: Wind, style: LandformStyle, rng: np.random.Generator) -> Renderer:
    """Star dunes about 1 km apart: a central pyramidal peak with 3-5 sinuous radiating arms."""
    spacing = rng.uniform(85.0, 140.0)
    grid = jittered_grid(scene, spacing, rng, density=0.92, jitter=0.45)
    g = grid.shape
    radius = spacing * rng.uniform(0.45, 0.65, g)
    narms = rng.integers(3, _MAX_ARMS + 1, g)
    base = rng.uniform(0.0, 2 * math.pi, g)
    arms = {f"arm{k}": base + k * 2 * math.pi / narms + rng.normal(0.0, 0.3, g) for k in range(_MAX_ARMS)}
    lengths = {f"len{k}": radius * rng.uniform(0.7, 1.0, g) for k in range(_MAX_ARMS)}
    grid = grid.with_objects(
        reach=radius, radius=radius, height=radius * PIXEL_SIZE_M * rng.uniform(0.07, 0.12, g) * style.relief,
        twist=rng.uniform(-0.7, 0.7, g), narms=narms, **arms, **lengths,
    )
    apron = noise_field(scene, 20.0, rng)
    rough = noise_field(scene, 5.0, rng, octaves=2)

    def render(win: Window) -> Surface:
        (height,) = render_max(win, grid, _star)
        height = height + _f32(0.6) * apron.sample(win) + _f32(0.1) * rough.sample(win)
        return _surface(height, np.maximum(smoothstep(0.0, 3.0, height), 0.4), 0.0)

    return render


# --------------------------------------------------------------------------------------------- 5 dome


def _dome(dx: np.ndarray, dy: np.ndarray, a: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    u, v = local_frame(dx, dy, a["sin"], a["cos"])
    big_r = a["radius"]
    un = u / np.where(u < 0, 1.35 * big_r, 1.05 * big_r)  # longer gentle stoss, no slip face
    q = np.square(un) + np.square(v / big_r)
    return (a["height"] * np.clip(1.0 - q, 0.0, 1.0) ** 1.5,)


def dome(scene: tuple[int, int], wind: Wind, style: LandformStyle, rng: np.random.Generator) -> Renderer:
    """Dome dunes: low rounded mounds 150-400 m across without slip faces, on a sand sheet."""
    spacing = rng.uniform(24.0, 40.0)
    grid = jittered_grid(scene, spacing, rng, density=rng.uniform(0.6, 0.9), jitter=0.7)
    g = grid.shape
    radius = spacing * rng.uniform(0.25, 0.5, g)
    grid = grid.with_objects(
        reach=1.36 * radius, radius=radius,
        height=radius * PIXEL_SIZE_M * rng.uniform(0.025, 0.05, g) * style.relief,
        **_orientation(g, wind.drift_deg, wind.jitter_deg(), rng),
    )
    rough = noise_field(scene, 10.0, rng, octaves=3)

    def render(win: Window) -> Surface:
        (height,) = render_max(win, grid, _dome)
        height = height + _f32(0.25) * rough.sample(win)
        return _surface(height, smoothstep(0.2, 1.5, height), 0.0)

    return render


# ---------------------------------------------------------------------------------------- 6 parabolic


_U_POWER = 2.5  # shape of a parabolic dune's U: larger gives a blunter nose and straighter arms


def _parabolic(dx: np.ndarray, dy: np.ndarray, a: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    u, v = local_frame(dx, dy, a["sin"], a["cos"])
    r, length, h0 = a["half_width"], a["arm_length"], a["height"]
    yn = v / r
    yn2 = np.square(yn)
    ya = np.minimum(np.abs(yn), 1.2)
    crest = length * (0.5 - ya**_U_POWER)  # the U: blunt nose downwind at +L/2, arms trailing to -L/2
    slope = _U_POWER * length * ya ** (_U_POWER - 1.0) / r
    d = (u - crest) / np.sqrt(1.0 + np.square(slope))  # signed distance, > 0 outside / downwind of the crest
    hv = h0 * (1.0 - 0.5 * yn2) * (1.0 - smoothstep(0.8, 1.0, np.abs(yn)))
    w_in = 0.35 * r
    w_out = (hv / SLIP_DROP_M + 0.5) * (1.0 - yn2) + w_in * yn2  # slip face at the nose, rounded arms
    prof = np.where(d < 0, np.clip(1.0 + d / w_in, 0.0, 1.0), np.clip(1.0 - d / w_out, 0.0, 1.0)) ** 1.2
    height = hv * prof
    hollow = (d < 0) & (np.abs(yn) < 0.9) & (u > -0.5 * length)  # deflation hollow inside the U
    veg = np.maximum(0.7 * prof * smoothstep(0.2, 0.7, np.abs(yn)), np.where(hollow, _f32(0.45), _f32(0.0)))
    wet = np.where(hollow, _f32(0.5), _f32(0.0)) * (1.0 - prof)
    return height, veg, wet


def parabolic(scene: tuple[int, int], wind: Wind, style: LandformStyle, rng: np.random.Generator) -> Renderer:
    """Parabolic dunes: U-shaped ridges with the nose downwind and vegetated arms trailing upwind."""
    spacing = rng.uniform(45.0, 75.0)
    grid = jittered_grid(scene, spacing, rng, density=rng.uniform(0.65, 0.9), jitter=0.5)
    g = grid.shape
    half = spacing * rng.uniform(0.2, 0.3, g)
    length = half * rng.uniform(2.0, 3.4, g)
    height = half * PIXEL_SIZE_M * rng.uniform(0.05, 0.09, g) * style.relief
    reach = np.hypot(0.5 * length + 0.35 * half + height / SLIP_DROP_M + 1.0, 1.05 * half)
    grid = grid.with_objects(reach=reach, half_width=half, arm_length=length, height=height,
                             **_orientation(g, wind.drift_deg, 0.5 * wind.jitter_deg(), rng))
    rough = noise_field(scene, 6.0, rng, octaves=3)

    def render(win: Window) -> Surface:
        height, veg, wet = render_max(win, grid, _parabolic, n_out=3)
        sand = 0.9 * smoothstep(0.5, 3.0, height)
        return _surface(height + _f32(0.15) * rough.sample(win), sand, veg, wet)

    return render


# ---------------------------------------------------------------------------------------- 7 reversing


def reversing(scene: tuple[int, int], wind: Wind, style: LandformStyle, rng: np.random.Generator) -> Renderer:
    """Reversing dunes: symmetric ridges across two opposed winds, two opposed slip faces and secondary crests."""
    lam = rng.uniform(24.0, 45.0)
    h0 = lam * PIXEL_SIZE_M * rng.uniform(0.045, 0.07) * style.relief
    toward = wind.primary_deg + rng.normal(0.0, 5.0)
    sinuosity = lam * (0.1 + 0.2 * wind.variability)
    sinuous_f = noise_field(scene, 2.0 * lam, rng)
    amp_f = noise_field(scene, 3.0 * lam, rng)
    rough = noise_field(scene, 5.0, rng, octaves=2)

    def render(win: Window) -> Surface:
        u, v = wind_frame(*win.grid(), toward)
        phi = (u + _f32(sinuosity) * sinuous_f.sample(win)) / _f32(lam)
        d = (phi - np.floor(phi) - 0.5) * _f32(lam)  # signed along-wind distance to the main crest
        amp = _f32(h0) * np.clip(0.8 + 0.25 * amp_f.sample(win), 0.35, None)
        broad = np.clip(1.0 - np.abs(d) / _f32(0.46 * lam), 0.0, 1.0) ** 1.3
        cap_off = _f32(0.06 * lam) * np.sin(_f32(2 * math.pi) * v / _f32(3.0 * lam))  # the crest cap flips side
        cap_w = np.maximum(_f32(0.35) * amp / _f32(SLIP_DROP_M), 1.0)
        cap = np.clip(1.0 - np.abs(d - cap_off) / cap_w, 0.0, 1.0)
        secondary = np.clip(1.0 - np.abs(np.abs(d) - _f32(0.27 * lam)) / _f32(0.07 * lam), 0.0, 1.0)
        height = amp * (0.62 * broad + 0.3 * cap + 0.22 * secondary)
        sand = 0.6 + 0.4 * smoothstep(0.05, 0.3, height / amp)
        return _surface(height + _f32(0.08) * rough.sample(win), sand, 0.0)

    return render


# ---------------------------------------------------------------------------------------- 8 sand sheet


def sand_sheet(scene: tuple[int, int], wind: Wind, style: LandformStyle, rng: np.random.Generator) -> Renderer:
    """Sand sheet: flat sand with sub-metre zibar undulations 150-400 m apart."""
    lam = rng.uniform(15.0, 40.0)
    toward = wind.drift_deg + rng.normal(0.0, 10.0)
    amp = rng.uniform(0.25, 0.7)
    level = rng.uniform(*SAND_SHEET_COVER)  # sand cover: thin sheets show the ground beneath
    warp_f = noise_field(scene, 1.5 * lam, rng)
    amp_f = noise_field(scene, 2.0 * lam, rng)
    swell = noise_field(scene, 60.0, rng)
    rough = noise_field(scene, 5.0, rng, octaves=3)
    cover = noise_field(scene, 15.0, rng)

    def render(win: Window) -> Surface:
        u, _ = wind_frame(*win.grid(), toward)
        zibar = np.sin(_f32(2 * math.pi) * (u + _f32(0.3 * lam) * warp_f.sample(win)) / _f32(lam))
        height = _f32(amp) * zibar * (0.5 + 0.5 * amp_f.sample(win)) + _f32(0.6) * swell.sample(win)
        height = height + _f32(0.1) * rough.sample(win)
        return _surface(height, level + 0.1 * cover.sample(win), 0.0)

    return render


# ------------------------------------------------------------------------------------------- 9 nebkha


def _nebkha(dx: np.ndarray, dy: np.ndarray, a: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    u, v = local_frame(dx, dy, a["sin"], a["cos"])
    r = a["radius"]
    q = np.square(v / r) + np.square(u / np.where(u < 0, r, 1.8 * r))  # sand shadow trails downwind
    height = a["height"] * np.exp(-1.5 * q) * (q < 6.0)
    shrub = _f32(0.9) * np.exp(-(np.square(dx) + np.square(dy)) / np.square(0.7 * r))
    return height, shrub


def nebkha(scene: tuple[int, int], wind: Wind, style: LandformStyle, rng: np.random.Generator) -> Renderer:
    """Vegetated nebkha (coppice) field: dense small sand mounds trapped behind shrubs, 40-70 m apart."""
    spacing = rng.uniform(4.0, 7.0)
    grid = jittered_grid(scene, spacing, rng, density=rng.uniform(0.6, 0.85), jitter=0.8)
    g = grid.shape
    radius = spacing * rng.uniform(0.14, 0.22, g)
    grid = grid.with_objects(reach=1.8 * math.sqrt(6.0) * radius, radius=radius,
                             height=rng.uniform(1.0, 3.5, g) * style.relief,
                             **_orientation(g, wind.drift_deg, wind.jitter_deg(), rng))
    swell = noise_field(scene, 40.0, rng)
    rough = noise_field(scene, 5.0, rng, octaves=2)

    def render(win: Window) -> Surface:
        height, shrub = render_max(win, grid, _nebkha, n_out=2)
        sand = 0.8 * smoothstep(0.2, 1.5, height)
        height = height + _f32(0.5) * swell.sample(win) + _f32(0.1) * rough.sample(win)
        return _surface(height, sand, shrub)

    return render


LANDFORMS: dict[int, Generator] = {
    INTERDUNE: interdune,
    CRESCENTIC: crescentic,
    BARCHANOID: barchanoid,
    LINEAR: linear,
    STAR: star,
    DOME: dome,
    PARABOLIC: parabolic,
    REVERSING: reversing,
    SAND_SHEET: sand_sheet,
    NEBKHA: nebkha,
}
