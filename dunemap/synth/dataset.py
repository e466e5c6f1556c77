"""Synthetic training datasets: scenes of several regions cut into tiles and split by spatial blocks.

The output is the seed layout (``img_dir/{split}/NAME.npy`` + ``ann_dir/{split}/NAME.png``) with a
``manifest.csv`` (region, scene, pixel window, CRS and geotransform of every tile) and a
``synth.json`` summary. Scenes of a region sit side by side on its UTM grid. By default
(``split_by="scene"``) some whole scenes are held out for test, so the test split measures mapping
of ground never seen in training; the other scenes are cut into square blocks of tiles dealt whole
to train/val/test (:mod:`dunemap.data.splits`), so test also holds in-scene blocks and the two
scores can be compared; val likewise holds whole scenes, so the best checkpoint is
chosen for skill on new ground. ``split_by="block"`` deals blocks of every scene. Everything is written to a
hidden staging folder and moved into place only when complete.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dunemap.data.manifest import TileRecord, write_manifest
from dunemap.data.seed_layout import check_dataset_out, publish_dataset, write_sample
from dunemap.data.splits import SPLIT_MODES, SPLITS, holdout_scenes, in_scene_fractions, parse_fractions, split_tiles
from dunemap.errors import ConfigError, InputError
from dunemap.io.atomic import atomic_path
from dunemap.io.progress import progress_bar
from dunemap.regions import REGIONS, get_region
from dunemap.registry import choose
from dunemap.synth.fields import PIXEL_SIZE_M
from dunemap.synth.landforms import NODATA_LABEL, NUM_CLASSES
from dunemap.synth.scene import SceneConfig, check_scene_memory, generate_scene, scene_origins

log = logging.getLogger(__name__)

SUMMARY_NAME = "synth.json"
SCENE_GAP_PX = 64  # pixels between neighbouring scenes of a region
_SEED_STRIDE = 10007  # scene seeds of dataset seed s are s * _SEED_STRIDE + i


@dataclass(frozen=True)
class PlannedTile:
    """One tile before any pixel is generated: where it is and which split it goes to."""

    name: str
    region: str
    scene: int  # index of the scene within its region
    scene_origin: tuple[float, float]  # map (x, y) of the scene's top-left corner
    row_off: int
    col_off: int
    transform: tuple[float, float, float, float, float, float]
    split: str | None  # None: dropped to keep the splits apart


def tile_grid(scene_size: int, tile: int) -> list[tuple[int, int]]:
    """Top-left ``(row, col)`` of the non-overlapping ``tile`` x ``tile`` tiles that fit in a square scene."""
    n = scene_size // tile
    return [(r * tile, c * tile) for r in range(n) for c in range(n)]


def scene_seed(seed: int, index: int) -> int:
    """The seed of scene ``index`` of a dataset made with ``seed`` (distinct for distinct pairs)."""
    return seed * _SEED_STRIDE + index


def plan_tiles(
    regions: list[str],
    scenes_per_region: int,
    scene_size: int,
    tile: int,
    seed: int,
    block_tiles: int,
    fractions: tuple[float, float, float],
    split_by: str = "scene",
) -> list[PlannedTile]:
    """Lay out every tile of the dataset and deal spatial blocks of ``block_tiles`` x ``block_tiles`` tiles to splits.

    Pure geometry: no scene is generated. Blocks live on each region's UTM grid, so one block may
    hold tiles of neighbouring scenes, never of two splits. With ``split_by="scene"`` the scenes
    chosen by :func:`dunemap.data.splits.holdout_scenes` go to val or test whole and only the others are
    dealt by blocks (with :func:`dunemap.data.splits.in_scene_fractions`).
    """
    choose(SPLIT_MODES, split_by, "split mode")
    held = (holdout_scenes({r: [str(i) for i in range(scenes_per_region)] for r in regions}, fractions, seed)
            if split_by == "scene" else {})
    out: list[PlannedTile] = []
    for region_name in regions:
        region = get_region(region_name)
        origins = scene_origins(region, (scene_size, scene_size), scenes_per_region, SCENE_GAP_PX)
        items, boxes = [], []
        for i, (x0, y0) in enumerate(origins):
            whole = held.get((region.name, str(i)))
            if whole is not None:
                for r, c in tile_grid(scene_size, tile):
                    tx, ty = x0 + c * PIXEL_SIZE_M, y0 - r * PIXEL_SIZE_M
                    t = (PIXEL_SIZE_M, 0.0, tx, 0.0, -PIXEL_SIZE_M, ty)
                    out.append(PlannedTile(_tile_name(region.name, seed, i, r, c), region.name, i, origins[i],
                                           r, c, t, whole))
                continue
            for r, c in tile_grid(scene_size, tile):
                tx, ty = x0 + c * PIXEL_SIZE_M, y0 - r * PIXEL_SIZE_M
                items.append((i, r, c, (PIXEL_SIZE_M, 0.0, tx, 0.0, -PIXEL_SIZE_M, ty)))
                boxes.append((tx, ty - tile * PIXEL_SIZE_M, tx + tile * PIXEL_SIZE_M, ty))
        if not boxes:
            continue
        result = split_tiles(np.asarray(boxes, dtype=np.float64), in_scene_fractions(fractions) if held else fractions,
                             block_extent=block_tiles * tile * PIXEL_SIZE_M, seed=seed,
                             tol=0.25 * PIXEL_SIZE_M)
        for (i, r, c, t), split in zip(items, result.splits):
            out.append(PlannedTile(_tile_name(region.name, seed, i, r, c), region.name, i, origins[i], r, c, t, split))
    return out


def _tile_name(region: str, seed: int, scene: int, row: int, col: int) -> str:
    return f"{region}_{scene_seed(seed, scene)}_r{row:05d}_c{col:05d}"


def _validate(regions: list[str], scenes_per_region: int, scene_size: int, tile: int, block_tiles: int,
              min_valid: float) -> list[str]:
    if not regions:
        raise ConfigError(f"no regions given; expected one or more of {', '.join(REGIONS)}")
    names = [get_region(r).name for r in regions]
    if len(set(names)) != len(names):
        raise ConfigError(f"regions {', '.join(regions)} repeat a region; give each once")
    if scenes_per_region < 1:
        raise ConfigError(f"scenes per region {scenes_per_region} must be at least 1")
    if tile < 16:
        raise ConfigError(f"tile {tile} px is too small; expected at least 16")
    if scene_size < tile:
        raise ConfigError(f"scene size {scene_size} px is smaller than the tile ({tile} px)")
    check_scene_memory((scene_size, scene_size))
    if block_tiles < 1:
        raise ConfigError(f"block size {block_tiles} must be at least 1 tile")
    if not 0.0 <= min_valid <= 1.0:
        raise ConfigError(f"minimum valid fraction {min_valid} must lie in [0, 1]")
    return names


def write_dataset(
    out_dir: str | Path,
    regions: list[str] | None = None,
    scenes_per_region: int = 2,
    scene_size: int = 512,
    tile: int = 128,
    seed: int = 0,
    block_tiles: int = 2,
    split: tuple[float, float, float] | str = (0.7, 0.15, 0.15),
    split_by: str = "scene",
    nodata_holes: bool = False,
    min_valid: float = 0.5,
    region_px: float = 320.0,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Generate ``scenes_per_region`` scenes per region, tile them and write a split seed-layout dataset.

    ``regions`` defaults to all five presets. ``split_by`` is a key of
    :data:`dunemap.data.splits.SPLIT_MODES`: ``scene`` (default) holds whole scenes out for test. Tiles with fewer than ``min_valid`` valid pixels are
    skipped. Returns the dataset folder. The same arguments always give byte-identical files.
    """
    out = Path(out_dir)
    names = _validate(list(REGIONS) if regions is None else list(regions), scenes_per_region, scene_size, tile,
                      block_tiles, min_valid)
    fractions = parse_fractions(split)
    check_dataset_out(out, overwrite, SUMMARY_NAME)
    plan = plan_tiles(names, scenes_per_region, scene_size, tile, seed, block_tiles, fractions, split_by)

    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".synth-", dir=out))
    done = False
    try:
        records: list[TileRecord] = []
        class_pixels = {s: np.zeros(NUM_CLASSES, dtype=np.int64) for s in SPLITS}
        regions_per_split: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
        skipped = 0
        by_scene: dict[tuple[str, int], list[PlannedTile]] = {}
        for t in plan:
            by_scene.setdefault((t.region, t.scene), []).append(t)
        for (region, i), tiles in progress_bar(sorted(by_scene.items()), enabled=progress, desc="synth scenes",
                                               unit="scene"):
            cfg = SceneConfig(size=(scene_size, scene_size), region=region, seed=scene_seed(seed, i),
                              nodata_holes=nodata_holes, region_px=region_px, origin=tiles[0].scene_origin)
            scene = generate_scene(cfg)
            for t in tiles:
                if t.split is None:
                    continue
                window = (slice(t.row_off, t.row_off + tile), slice(t.col_off, t.col_off + tile))
                label = scene.label[window]
                if np.count_nonzero(label != NODATA_LABEL) < min_valid * label.size:
                    skipped += 1
                    continue
                write_sample(staging, t.split, t.name, scene.embedding[:, window[0], window[1]], label)
                class_pixels[t.split] += np.bincount(label[label != NODATA_LABEL], minlength=NUM_CLASSES)
                regions_per_split[t.split][region] = regions_per_split[t.split].get(region, 0) + 1
                records.append(TileRecord(
                    name=t.name, split=t.split, region=region, source=f"synth:{scene.name}",
                    row_off=t.row_off, col_off=t.col_off, height=tile, width=tile, crs=scene.crs,
                    transform=" ".join(repr(float(v)) for v in t.transform),
                ))
        heldout = {s: sorted(f"{r}_{scene_seed(seed, i)}" for (r, i), tiles in by_scene.items()
                             if split_by == "scene" and all(t.split == s for t in tiles)) for s in SPLITS[1:]}
        records.sort(key=lambda rec: (SPLITS.index(rec.split), rec.name))
        write_manifest(staging, records)
        tiles_per_split = {s: sum(r.split == s for r in records) for s in SPLITS}
        for s, frac in zip(SPLITS, fractions):
            if frac > 0 and tiles_per_split[s] == 0:
                log.warning("split %s received no tiles; use more scenes, a larger scene or a smaller --block-tiles", s)
        summary = {
            "tiles": tiles_per_split,
            "skipped_nodata": skipped,
            "dropped_for_split": sum(t.split is None for t in plan),
            "class_pixels": {s: v.tolist() for s, v in class_pixels.items()},
            "regions": regions_per_split,
            "config": {"regions": names, "scenes_per_region": scenes_per_region, "scene_size": scene_size,
                       "tile": tile, "seed": seed, "block_tiles": block_tiles, "split": list(fractions),
                       "split_by": split_by,
                       "heldout_scenes": heldout,
                       "nodata_holes": nodata_holes, "min_valid": min_valid, "region_px": region_px},
        }
        with atomic_path(staging / SUMMARY_NAME) as tmp:
            tmp.write_text(json.dumps(summary, indent=2) + "\n")
        publish_dataset(staging, out, SUMMARY_NAME, SPLITS)
        done = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not done and not any(out.iterdir()):
            out.rmdir()  # leave no trace of a failed run
    log.debug("wrote %d tiles to %s (%s)", len(records), out,
             ", ".join(f"{s} {n}" for s, n in tiles_per_split.items()))
    return out


def read_summary(root: str | Path) -> dict:
    """The ``synth.json`` summary of a synthetic dataset written by :func:`write_dataset`."""
    path = Path(root) / SUMMARY_NAME
    if not path.is_file():
        raise InputError(f"{path}: not found; expected a dataset written by 'dunemap synth dataset'")
    return json.loads(path.read_text())
