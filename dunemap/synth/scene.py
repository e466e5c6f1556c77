"""One synthetic scene: class layout, blended landform height field, embeddings, nodata and georeferencing."""

from __future__ import annotations

import logging
import math
import zlib
from dataclasses import dataclass

import numpy as np
from affine import Affine
from scipy import ndimage

from dunemap.errors import ConfigError
from dunemap.regions import Region, get_region
from dunemap.synth.embedding import EMBED_SEED, embed_features, surface_features
from dunemap.synth.fields import (
    PIXEL_SIZE_M,
    Window,
    grow,
    noise_field,
    smoothstep,
    tile_windows,
)
from dunemap.synth.landforms import (
    GROUND_SAND_MAX,
    LANDFORMS,
    NODATA_LABEL,
    NUM_CLASSES,
    LandformStyle,
    Renderer,
)
from dunemap.synth.layout import class_layout
from dunemap.synth.presets import get_preset
from dunemap.synth.wind import Wind, draw_wind

log = logging.getLogger(__name__)

MIN_SIZE = 16
# A scene is generated whole in memory. Peak memory of `dunemap synth scene` measured 889 MB at 1024 px and 1533 MB
# at 1536 px a side: about 400 MB for the process plus 490 bytes per pixel, rounded up below.
COMMAND_MEMORY_BYTES = 2 * 1024**3  # what one dunemap command may use
BASE_MEMORY_BYTES = 512 * 1024**2  # the process before the scene: Python, numpy, torch, GDAL
SCENE_BYTES_PER_PIXEL = 520  # generating and writing a scene, per pixel


def check_scene_memory(size: tuple[int, int]) -> None:
    """Refuse (one ConfigError naming the size) a scene that would need more than ``COMMAND_MEMORY_BYTES``."""
    h, w = size
    need = BASE_MEMORY_BYTES + SCENE_BYTES_PER_PIXEL * h * w
    if need > COMMAND_MEMORY_BYTES:
        side = math.isqrt((COMMAND_MEMORY_BYTES - BASE_MEMORY_BYTES) // SCENE_BYTES_PER_PIXEL)
        raise ConfigError(f"scene size {h}x{w} would need about {need / 1024**3:.1f} GiB of memory, more than the "
                          f"{COMMAND_MEMORY_BYTES / 1024**3:g} GiB a command may use; the largest scene is about "
                          f"{side}x{side} px (cover a larger area with several scenes)")
RENDER_TILE = 256  # landforms are rendered tile by tile, each class only where it (nearly) occurs
_STREAMS = ("layout", "wind", "terrain", "holes", "embedding", "ground")  # independent random streams, then one per class


@dataclass(frozen=True)
class SceneConfig:
    """What to synthesise; the same config always gives byte-identical arrays."""

    size: tuple[int, int] = (512, 512)  # (height, width) in 10 m pixels
    region: str = "namib"  # a key of dunemap.regions.REGIONS
    seed: int = 0
    nodata_holes: bool = False  # punch irregular nodata blobs (label 255, zero embedding)
    hole_fraction: float = 0.06  # share of the scene in nodata holes when nodata_holes is set
    region_px: float = 320.0  # typical width of one landform region (Voronoi cell), pixels
    blend_px: float = 4.0  # Gaussian width of the height transition between landform regions, pixels
    noise: float = 0.6  # sensor noise of the embedding model (std per feature and pixel)
    origin: tuple[float, float] | None = None  # map (x, y) of the top-left corner; None: centred in the region
    embedding_seed: int = EMBED_SEED  # the frozen embedding model; another seed is another "sensor" (unfamiliar ground)

    def __post_init__(self) -> None:
        size = self.size if isinstance(self.size, (tuple, list)) else (self.size, self.size)
        object.__setattr__(self, "size", (int(size[0]), int(size[1])))
        object.__setattr__(self, "region", str(self.region).lower())

    @property
    def name(self) -> str:
        """``<region>_<seed>``, plus ``_e<embedding seed>`` for another embedding model."""
        suffix = "" if self.embedding_seed == EMBED_SEED else f"_e{self.embedding_seed}"
        return f"{self.region}_{self.seed}{suffix}"


@dataclass(frozen=True)
class Scene:
    """A generated scene; arrays are north-up (row 0 is the northern edge)."""

    config: SceneConfig
    height: np.ndarray  # (H, W) float32, metres
    label: np.ndarray  # (H, W) uint8 class ids, 255 where nodata
    embedding: np.ndarray  # (64, H, W) float32 unit vectors, 0 where nodata
    valid: np.ndarray  # (H, W) bool
    crs: str  # "EPSG:<utm zone code>" of the region
    transform: Affine  # north-up affine transform, 10 m pixels
    wind: Wind

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def shape(self) -> tuple[int, int]:
        return self.label.shape


def validate_config(cfg: SceneConfig) -> Region:
    """Check a config; returns its region or raises ConfigError naming the bad value."""
    region = get_region(cfg.region)
    h, w = cfg.size
    if h < MIN_SIZE or w < MIN_SIZE:
        raise ConfigError(f"scene size {h}x{w} is too small; expected at least {MIN_SIZE}x{MIN_SIZE} pixels")
    if not 0.0 <= cfg.hole_fraction <= 0.5:
        raise ConfigError(f"hole fraction {cfg.hole_fraction} must lie in [0, 0.5]")
    if not cfg.region_px >= 16:
        raise ConfigError(f"region size {cfg.region_px} px must be at least 16 pixels")
    if not 0.0 <= cfg.blend_px <= 64:
        raise ConfigError(f"blend width {cfg.blend_px} px must lie in [0, 64]")
    if not 0.0 <= cfg.noise <= 2.0:
        raise ConfigError(f"embedding noise {cfg.noise} must lie in [0, 2]")
    if cfg.seed < 0:
        raise ConfigError(f"seed {cfg.seed} must be a non-negative integer")
    return region


def region_center_xy(region: Region) -> tuple[float, float]:
    """The region's bbox centre projected to its UTM zone, snapped to the 10 m grid."""
    from pyproj import Transformer

    to_utm = Transformer.from_crs("EPSG:4326", f"EPSG:{region.epsg}", always_xy=True)
    x, y = to_utm.transform(*region.center)
    return round(x / PIXEL_SIZE_M) * PIXEL_SIZE_M, round(y / PIXEL_SIZE_M) * PIXEL_SIZE_M


def scene_origins(region: Region, size: tuple[int, int], count: int, gap_px: int = 64) -> list[tuple[float, float]]:
    """Top-left map corners of ``count`` non-overlapping scenes on a square grid centred on the region.

    Neighbouring scenes are ``gap_px`` pixels apart. Raises ConfigError when the grid would leave
    the region's projected bounding box.
    """
    from pyproj import Transformer

    h, w = size
    k = max(1, math.ceil(math.sqrt(count)))
    step_x, step_y = (w + gap_px) * PIXEL_SIZE_M, (h + gap_px) * PIXEL_SIZE_M
    cx, cy = region_center_xy(region)
    x0 = cx - ((k * (w + gap_px) - gap_px) // 2) * PIXEL_SIZE_M  # whole pixels: stay on the 10 m lattice
    y0 = cy + ((k * (h + gap_px) - gap_px) // 2) * PIXEL_SIZE_M
    minx, miny, maxx, maxy = Transformer.from_crs("EPSG:4326", f"EPSG:{region.epsg}", always_xy=True).transform_bounds(
        *region.bbox, densify_pts=21
    )
    if x0 < minx or y0 > maxy or x0 + k * step_x > maxx or y0 - k * step_y < miny:
        raise ConfigError(f"{count} scenes of {h}x{w} px do not fit in region {region.name!r} "
                          f"({(maxx - minx) / 1000:.0f} x {(maxy - miny) / 1000:.0f} km); use fewer or smaller scenes")
    out = []
    for i in range(count):
        r, c = divmod(i, k)
        out.append((x0 + c * step_x, y0 - r * step_y))
    return out


def _rngs(cfg: SceneConfig) -> dict[str, np.random.Generator]:
    seq = np.random.SeedSequence([cfg.seed, zlib.crc32(cfg.region.encode("utf-8"))])
    children = seq.spawn(len(_STREAMS) + NUM_CLASSES)
    out = {name: np.random.default_rng(s) for name, s in zip(_STREAMS, children)}
    out.update({f"class{c}": np.random.default_rng(children[len(_STREAMS) + c]) for c in range(NUM_CLASSES)})
    return out


def nodata_mask(shape: tuple[int, int], fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Valid-pixel mask with irregular nodata blobs covering about ``fraction`` of the scene."""
    if fraction <= 0:
        return np.ones(shape, dtype=bool)
    field = noise_field(shape, 40.0, rng, octaves=4).sample(Window(0, 0, *shape))
    return field < np.quantile(field, 1.0 - fraction)


def compose_landforms(
    label: np.ndarray,
    wind: Wind,
    style: LandformStyle,
    rng: dict[str, np.random.Generator],
    blend_px: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Render each class's landform where the layout puts it and blend them; returns height, sand, veg, wet.

    Each class's weight is its Gaussian-blurred mask (``blend_px`` wide), so weights form a
    partition of unity and heights pass smoothly from one landform to the next. Work is done per
    tile with a halo as wide as the blur, and a class is rendered only on tiles it reaches.
    """
    shape = label.shape
    out = [np.zeros(shape, np.float32) for _ in range(4)]
    margin = int(math.ceil(4.0 * blend_px)) + 1  # beyond the Gaussian's support (truncate=4)
    renderers: dict[int, Renderer] = {}
    for win in tile_windows(shape, RENDER_TILE):
        halo = grow(win, margin, shape)
        inner = (slice(win.row_off - halo.row_off, win.row_off - halo.row_off + win.height),
                 slice(win.col_off - halo.col_off, win.col_off - halo.col_off + win.width))
        lab = label[halo.slices]
        for c in np.unique(lab).tolist():
            mask = (lab == c).astype(np.float32)
            weight = (ndimage.gaussian_filter(mask, blend_px, mode="nearest") if blend_px > 0 else mask)[inner]
            if not (weight > 1e-4).any():
                continue
            if c not in renderers:  # draw the landform once, from its own random stream
                renderers[c] = LANDFORMS[c](shape, wind, style, rng[f"class{c}"])
            surf = renderers[c](win)
            for acc, part in zip(out, (surf.height, surf.sand, surf.veg, surf.wet)):
                acc[win.slices] += weight * part
    log.debug("rendered landform classes %s", sorted(renderers))
    return out[0], out[1], out[2], out[3]


def ground_cover(
    shape: tuple[int, int], style: LandformStyle, rng: np.random.Generator, sand_max: float = GROUND_SAND_MAX
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ground shared by every landform: sand cover, vegetation and wetness (playas), each (H, W) float32.

    Its patches ignore the class layout, so the flats between dunes look the same in every class
    and only the dunes' geometry tells the classes apart. Its sand cover stays at or below
    ``sand_max`` (:data:`GROUND_SAND_MAX`, under a sand sheet's; docs/quality.md, "the label rule").
    """
    whole = Window(0, 0, *shape)
    level = style.ground_sand + rng.uniform(-0.1, 0.25)
    sand = level + 0.3 * noise_field(shape, 60.0, rng).sample(whole) + 0.1 * noise_field(shape, 12.0, rng).sample(whole)
    veg = style.ground_veg * (1.0 + 0.6 * noise_field(shape, 25.0, rng).sample(whole))
    pan_level = rng.uniform(0.9, 1.8)
    wet = 0.8 * smoothstep(pan_level, pan_level + 0.5, noise_field(shape, 45.0, rng).sample(whole))
    return (np.clip(sand, 0.0, sand_max).astype(np.float32), np.clip(veg, 0.0, 1.0).astype(np.float32),
            wet.astype(np.float32))


def generate_scene(cfg: SceneConfig) -> Scene:
    """Synthesise a scene of the config's region: labels, heights, 64-band embeddings and georeferencing."""
    region = validate_config(cfg)
    preset = get_preset(cfg.region)
    rng = _rngs(cfg)
    shape = cfg.size
    wind = draw_wind(preset.wind, rng["wind"])
    label = class_layout(shape, preset.class_weights(), rng["layout"], region_px=cfg.region_px)

    height, dune_sand, dune_veg, dune_wet = compose_landforms(label, wind, preset.style, rng, cfg.blend_px)
    ground_sand, ground_veg, ground_wet = ground_cover(shape, preset.style, rng["ground"])
    sand = dune_sand + (1.0 - dune_sand) * ground_sand
    veg = np.maximum(ground_veg * (1.0 - dune_sand) + preset.style.dune_veg * dune_sand, dune_veg)
    wet = np.maximum(ground_wet * (1.0 - dune_sand), dune_wet)
    del dune_veg, dune_wet, ground_sand, ground_veg, ground_wet
    whole = Window(0, 0, *shape)
    t = rng["terrain"]
    height += np.float32(6.0) * noise_field(shape, 300.0, t).sample(whole)
    height += np.float32(1.5) * noise_field(shape, 80.0, t).sample(whole)

    valid = nodata_mask(shape, cfg.hole_fraction if cfg.nodata_holes else 0.0, rng["holes"])
    e = rng["embedding"]
    feats = surface_features(height, sand, veg, wet, preset.material, preset.sun,
                             brightness_gain=float(e.uniform(0.85, 1.15)), moisture_shift=float(e.uniform(-0.08, 0.08)))
    embedding = embed_features(feats, e, noise=cfg.noise, seed=cfg.embedding_seed)
    del feats
    embedding[:, ~valid] = 0.0
    label[~valid] = NODATA_LABEL

    if cfg.origin is None:
        cx, cy = region_center_xy(region)
        x0 = cx - (shape[1] // 2) * PIXEL_SIZE_M  # whole pixels, so the grid stays on the 10 m lattice
        y0 = cy + (shape[0] // 2) * PIXEL_SIZE_M
    else:
        x0, y0 = float(cfg.origin[0]), float(cfg.origin[1])
    transform = Affine(PIXEL_SIZE_M, 0.0, x0, 0.0, -PIXEL_SIZE_M, y0)
    return Scene(config=cfg, height=height, label=label, embedding=embedding, valid=valid,
                 crs=f"EPSG:{region.epsg}", transform=transform, wind=wind)
