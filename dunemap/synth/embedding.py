"""The fixed synthetic "embedding model": surface properties -> 64-band unit-length vectors like AEF.

Per-pixel surface features (slope components, illumination, curvature, relative height,
roughness, sand / vegetation / moisture cover, brightness and redness of the material) are
perturbed by sensor noise, passed through a two-scale Gaussian filter bank and a frozen random
two-layer network whose weights come from one fixed seed (identical for every scene and
region), then L2-normalised. Everything a class shares with its neighbours per pixel (sand
colour, slope statistics) overlaps between classes; what separates them is spatial pattern.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from dunemap.synth.fields import PIXEL_SIZE_M

EMBED_DIM = 64
EMBED_SEED = 0xAEF0064  # fixed forever: changing it changes every synthetic dataset
FEATURE_NAMES = (
    "slope_east", "slope_north", "slope", "illumination", "curvature", "relative_height", "roughness",
    "sand", "vegetation", "moisture", "brightness", "redness",
)
FILTER_SIGMAS = (0.8, 2.5)  # pixels; the filter bank's two scales
HIDDEN = 64


@dataclass(frozen=True)
class Illumination:
    """Sun position of the optical acquisitions behind the embedding (degrees)."""

    azimuth_deg: float
    elevation_deg: float


@dataclass(frozen=True)
class Material:
    """Surface colour of loose sand and of the interdune ground, as the embedding model sees it."""

    sand_albedo: float  # broadband brightness of dry sand, 0..1
    sand_red: float  # iron-oxide redness of the sand, 0..1
    ground_albedo: float  # brightness of the gravel / rock / clay ground
    ground_red: float
    moisture: float  # background soil moisture / fog / salt-crust wetness, 0..1


@dataclass(frozen=True)
class FrozenNet:
    """The frozen random projection: ``out = w2 @ tanh(w1 @ x + b1) + b2``."""

    w1: np.ndarray  # (HIDDEN, n_in) float32
    b1: np.ndarray  # (HIDDEN,)
    w2: np.ndarray  # (EMBED_DIM, HIDDEN)
    b2: np.ndarray  # (EMBED_DIM,)


@functools.lru_cache(maxsize=4)
def frozen_net(seed: int = EMBED_SEED) -> FrozenNet:
    """Build the network from ``seed`` (cached; never depends on the scene).

    Every synthetic dataset uses :data:`EMBED_SEED`; another seed is another embedding model, the
    same ground seen by a "sensor" no model trained on the default data has met.
    """
    rng = np.random.default_rng(seed)
    n_in = len(FEATURE_NAMES) * len(FILTER_SIGMAS)
    w1 = rng.normal(0.0, 1.6 / math.sqrt(n_in), (HIDDEN, n_in)).astype(np.float32)
    b1 = rng.normal(0.0, 0.4, HIDDEN).astype(np.float32)
    w2 = rng.normal(0.0, 1.0 / math.sqrt(HIDDEN), (EMBED_DIM, HIDDEN)).astype(np.float32)
    b2 = rng.normal(0.0, 0.15, EMBED_DIM).astype(np.float32)
    return FrozenNet(w1=w1, b1=b1, w2=w2, b2=b2)


def hillshade(height: np.ndarray, azimuth_deg: float, elevation_deg: float, exaggeration: float = 1.0) -> np.ndarray:
    """Lambertian shading in [0, 1] of a (H, W) height field in metres on 10 m pixels (row 0 = north)."""
    dzdy, dzdx = np.gradient(height.astype(np.float32) * np.float32(exaggeration / PIXEL_SIZE_M))
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    sx, sy, sz = math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), math.sin(el)  # east, north, up
    # Surface normal (-dz/dx_east, -dz/dy_north, 1); rows grow southward so dz/dy_north = -dzdy.
    shade = (-dzdx * sx + dzdy * sy + sz) / np.sqrt(1.0 + dzdx * dzdx + dzdy * dzdy)
    return np.clip(shade, 0.0, 1.0).astype(np.float32)


def _broad_mean(a: np.ndarray, sigma: float) -> np.ndarray:
    """A cheap wide Gaussian-like blur: three box filters whose combined variance is ``sigma``**2."""
    size = max(int(round(math.sqrt(4.0 * sigma * sigma + 1.0))), 1)  # three boxes of variance (size**2-1)/12
    out = a
    for _ in range(3):
        out = ndimage.uniform_filter(out, size, mode="reflect")
    return out


def surface_features(
    height: np.ndarray,
    sand: np.ndarray,
    veg: np.ndarray,
    wet: np.ndarray,
    material: Material,
    sun: Illumination,
    brightness_gain: float = 1.0,
    moisture_shift: float = 0.0,
) -> np.ndarray:
    """Per-pixel surface features, (len(FEATURE_NAMES), H, W) float32, each roughly within [-1, 1].

    ``brightness_gain`` and ``moisture_shift`` model the acquisition conditions of one scene
    (atmosphere, season, a wet year) on top of the region's material.
    """
    h = height.astype(np.float32)
    dzdy, dzdx = np.gradient(h / np.float32(PIXEL_SIZE_M))  # m/m; rows grow southward
    slope = np.hypot(dzdx, dzdy)
    illum = hillshade(h, sun.azimuth_deg, sun.elevation_deg)
    smooth1 = ndimage.gaussian_filter(h, 1.0)
    curvature = ndimage.laplace(smooth1)
    rel = h - _broad_mean(h, 25.0)
    rough = np.sqrt(ndimage.gaussian_filter(np.square(h - smooth1), 1.5))
    base = float(np.clip(material.moisture + moisture_shift, 0.0, 1.0))
    moisture = np.clip(base + wet * (1.0 - base), 0.0, 1.0)
    bright = (sand * material.sand_albedo + (1.0 - sand) * material.ground_albedo) * (1.0 - 0.5 * veg)
    bright = bright * (1.0 - 0.35 * moisture) * (0.6 + 0.55 * illum) * brightness_gain
    red = (sand * material.sand_red + (1.0 - sand) * material.ground_red) * (1.0 - 0.6 * veg)
    feats = [
        np.tanh(dzdx / 0.25),
        np.tanh(-dzdy / 0.25),
        np.tanh(slope / 0.3) * 2.0 - 1.0,
        illum * 2.0 - 1.0,
        np.tanh(curvature / 0.5),
        np.tanh(rel / 8.0),
        np.tanh(rough / 0.4) * 2.0 - 1.0,
        sand * 2.0 - 1.0,
        veg * 2.0 - 1.0,
        moisture * 2.0 - 1.0,
        bright * 4.0 - 1.0,
        red * 2.0 - 1.0,
    ]
    return np.stack([f.astype(np.float32, copy=False) for f in feats])


def embed_features(
    feats: np.ndarray,
    rng: np.random.Generator,
    noise: float = 0.6,
    chunk: int = 1 << 16,
    seed: int = EMBED_SEED,
) -> np.ndarray:
    """Map (F, H, W) surface features to (64, H, W) float32 unit vectors with the frozen network.

    ``noise`` is the std of independent per-feature, per-pixel sensor noise added before the
    filter bank (its smoothing turns it into the spatially correlated noise of real embeddings).
    Pixels are pushed through the network ``chunk`` at a time to bound memory; ``seed`` chooses the
    network (:func:`frozen_net`).
    """
    net = frozen_net(seed)
    f, h, w = feats.shape
    n_scales = len(FILTER_SIGMAS)
    bank = np.empty((f * n_scales, h, w), dtype=np.float32)  # the filter bank's responses
    for i in range(f):
        noisy = feats[i] + np.float32(noise) * rng.standard_normal((h, w), dtype=np.float32)
        for j, sigma in enumerate(FILTER_SIGMAS):
            ndimage.gaussian_filter(noisy, sigma, output=bank[i * n_scales + j], mode="reflect", truncate=3.0)
    x = bank.reshape(f * n_scales, h * w)
    out = np.empty((EMBED_DIM, h * w), dtype=np.float32)
    for s0 in range(0, h * w, chunk):
        s1 = min(s0 + chunk, h * w)
        hidden = net.w1 @ x[:, s0:s1]  # (HIDDEN, n)
        hidden += net.b1[:, None]
        np.tanh(hidden, out=hidden)
        y = net.w2 @ hidden  # (64, n)
        y += net.b2[:, None]
        y /= np.maximum(np.sqrt(np.einsum("ij,ij->j", y, y)), np.float32(1e-6))
        out[:, s0:s1] = y
    return out.reshape(EMBED_DIM, h, w)
