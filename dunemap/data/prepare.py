"""Turn embedding GeoTIFFs and expert labels (polygons or a label raster) into a split seed-layout dataset.

Each image is cut into ``tile`` x ``tile`` pixel tiles (north-up; bottom-up rasters are flipped),
labels are rasterised per tile with the catalog's class ids (255 = unlabelled / nodata), tiles with
too many ignored pixels are skipped, and the rest are split train/val/test by spatial blocks
(:mod:`dunemap.data.splits`). The dataset gets ``img_dir``/``ann_dir`` tiles, a ``manifest.csv``
with each tile's source window, geotransform and CRS, and a ``summary.json`` with the class balance
of each split. Everything is first written under a hidden staging folder inside the output and moved
into place only when complete, so a failure leaves no half-written dataset.

Images may be float embeddings (non-finite values and the raster's nodata value are nodata) or AEF
int8 (de-quantised; -128 is nodata). Where polygons overlap, the later feature wins.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dunemap.data.labels import RasterLabels, VectorLabels, fold_name, is_vector, read_vector_labels
from dunemap.data.manifest import TileRecord, write_manifest
from dunemap.data.patches import Patch, read_patches
from dunemap.data.seed_layout import (
    ANN_DIR,
    IGNORE_INDEX,
    IMG_DIR,
    check_dataset_out,
    image_path,
    label_path,
    publish_dataset,
    write_sample,
)
from dunemap.data.splits import SPLIT_MODES, SPLITS, SplitResult, parse_fractions, split_scenes, split_tiles
from dunemap.errors import ConfigError, InputError
from dunemap.io.atomic import atomic_path
from dunemap.io.progress import progress_bar
from dunemap.knowledge.catalog import load_catalog
from dunemap.raster.geometry import Box, window_starts
from dunemap.raster.reader import EmbeddingReader, open_raster
from dunemap.raster.transform import source_rows, tile_transform
from dunemap.registry import choose

log = logging.getLogger(__name__)

SUMMARY_NAME = "summary.json"
_STAGING_SPLIT = "all"  # staging sub-folder holding every kept tile before the split is known


@dataclass
class PrepareConfig:
    """Options of :func:`prepare_dataset`; sizes are in pixels unless stated."""

    images: list[Path]  # embedding GeoTIFFs (float, or AEF int8)
    labels: list[Path]  # one label file shared by all images, or one per image (vector or raster)
    out: Path  # dataset folder to create
    class_field: str = "class"  # vector attribute holding class ids or names
    layer: str | None = None  # vector layer; None = the file's first layer
    regions: list[str] = field(default_factory=list)  # one per image; empty = each image's REGION tag, else its stem
    in_channels: int = 64  # bands every image must have (AEF: 64), as train's --bands
    tile: int = 512  # tile side
    stride: int | None = None  # step between tiles; None = tile (no overlap)
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)  # train, val, test fractions of tiles
    block_tiles: int = 0  # side of a spatial block, in tile steps; 0 = the largest of 4..1 that fills every split
    buffer: int = 0  # extra gap between tiles of different splits, in tiles (overlaps are always removed)
    split_by: str = "block"  # block | scene: hold whole images out for val/test (dunemap.data.splits.SPLIT_MODES)
    min_valid: float = 0.5  # skip tiles whose fraction of valid, labelled pixels is below this
    seed: int = 0  # seed of the block shuffle
    catalog: Path | None = None  # class catalog; None = the packaged default
    patches: Path | None = None  # labelling patches (dunemap suggest): one training tile around each, labels only
    # inside the patch, every tile in the train split (fine-tuning data; the base dataset keeps val/test)
    overwrite: bool = False  # replace an existing dataset in ``out``
    progress: bool = True  # a progress bar per image (only on a terminal)


@dataclass
class PrepareSummary:
    """What :func:`prepare_dataset` wrote; also saved as ``summary.json`` in the dataset."""

    out: str
    class_names: list[str]
    tiles: dict[str, int]  # kept tiles per split
    skipped_nodata: int  # tiles under ``min_valid``
    dropped_for_split: int  # tiles removed so that splits do not touch
    class_pixels: dict[str, list[int]]  # per split, labelled pixels per class id
    class_fraction: dict[str, list[float]]  # per split, share of labelled pixels per class id
    regions: dict[str, dict[str, int]]  # per split, tiles per region
    sources: list[str]
    config: dict[str, Any]

    @property
    def total_tiles(self) -> int:
        return sum(self.tiles.values())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "x"


def _open_image(path: Path, bands: int) -> EmbeddingReader:
    """An embedding image through the one reader (its valid-pixel rule, north-up rows); it must have a CRS and
    ``bands`` bands, so a raster that is not embeddings is refused here, not when training reads its tiles."""
    image = EmbeddingReader(path, bands=None)
    if image.crs is None or image.bands != bands:
        image.close()
        raise InputError(f"{path}: image has no CRS; expected a georeferenced GeoTIFF" if image.crs is None else
                         f"{path}: has {image.bands} band(s); expected {bands} embedding bands (--bands; AEF: 64)")
    return image


def _around(box: Box, tile: int, image: EmbeddingReader) -> tuple[int, int]:
    """Top-left (row, col) of the ``tile``-pixel training tile centred on ``box``, kept inside the image."""
    row = min(max(box.row + box.height // 2 - tile // 2, 0), max(image.height - tile, 0))
    col = min(max(box.col + box.width // 2 - tile // 2, 0), max(image.width - tile, 0))
    return row, col


def _inside_patch(labels: np.ndarray, patch: Patch, row: int, col: int, source: Path) -> np.ndarray:
    """The tile's labels inside ``patch`` only (255 elsewhere); a patch without any label is an error."""
    out = np.full_like(labels, IGNORE_INDEX)
    r = patch.box.intersection(Box(row, col, *labels.shape))
    if r is not None:
        rel = r.relative_to(Box(row, col, *labels.shape))
        out[rel.slices()] = labels[rel.slices()]
    if not (out != IGNORE_INDEX).any():
        raise InputError(f"{source}: patch {patch.number} has no label: no polygon of a class covers its valid pixels")
    return out


def _read_tile(image: EmbeddingReader, row_off: int, col_off: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """North-up tile as (float32 (C, size, size) with 0 at nodata, bool valid mask (size, size)); pixels beyond
    the raster's edge are nodata."""
    h, w = min(size, image.height - row_off), min(size, image.width - col_off)
    block = image.read(Box(row_off, col_off, h, w))
    values = np.zeros((image.bands, size, size), dtype=np.float32)
    valid = np.zeros((size, size), dtype=bool)
    values[:, :h, :w] = block.embeddings(block.box)
    valid[:h, :w] = block.valid
    return values, valid


# --------------------------------------------------------------------------- the pipeline


@dataclass
class _Candidate:
    name: str
    image_index: int
    region: str
    col_off: int
    record_row: int  # the tile's first row in the stored raster (counted from the bottom for bottom-up sources)
    transform: Any
    box: tuple[float, float, float, float]  # bounds in the reference CRS
    class_pixels: np.ndarray


def _validate(config: PrepareConfig) -> tuple[list[Path], list[str], int, tuple[float, float, float]]:
    images = [Path(p) for p in config.images]
    if not images:
        raise ConfigError("no --image given; expected at least one embedding GeoTIFF")
    labels = [Path(p) for p in config.labels]
    if len(labels) not in (1, len(images)):
        raise ConfigError(f"{len(labels)} label files for {len(images)} images; expected one shared file or one per image")
    regions = list(config.regions)
    if regions and len(regions) != len(images):
        raise ConfigError(f"{len(regions)} --region values for {len(images)} images; expected one per image or none")
    for p in images + labels:
        if not p.exists():
            raise InputError(f"{p}: file not found")
    if not regions:
        regions = [image_region(p) for p in images]
    if config.tile <= 0:
        raise ConfigError(f"tile {config.tile} must be a positive number of pixels")
    stride = config.stride or config.tile
    if stride <= 0:
        raise ConfigError(f"stride {stride} must be a positive number of pixels")
    choose(SPLIT_MODES, config.split_by, "split mode")
    if config.block_tiles < 0:
        raise ConfigError(f"--block-tiles {config.block_tiles} must be 0 (auto) or at least 1 tile")
    if config.buffer < 0:
        raise ConfigError(f"buffer {config.buffer} must be 0 or more tiles")
    if not 0.0 <= config.min_valid <= 1.0:
        raise ConfigError(f"--min-valid {config.min_valid} must lie in [0, 1]")
    fractions = parse_fractions(config.split)
    return images, regions, stride, fractions




class _Cutter:
    """Cuts images into labelled tiles under ``staging``, remembering each kept tile as a :class:`_Candidate`."""

    def __init__(self, config: PrepareConfig, catalog: Any, staging: Path, stride: int):
        self.config, self.catalog, self.staging, self.stride = config, catalog, staging, stride
        self.candidates: list[_Candidate] = []
        self.skipped = 0
        self.sources: list[str] = []
        self.crs_texts: list[str] = []
        self.ref_crs: Any = None  # the first image's CRS: tile boxes for splitting are compared in it
        self.ref_res = 1.0
        self._vectors: dict[Path, VectorLabels] = {}
        self._stems: set[str] = set()

    def _labeller(self, lbl_path: Path, image: EmbeddingReader) -> tuple[Any, Any]:
        """A function (row, col, tile transform) -> uint8 label tile, and the object to close afterwards."""
        cfg, cat = self.config, self.catalog
        if not is_vector(lbl_path):
            raster = RasterLabels(lbl_path, image, cat.num_classes, cat.names)
            return (lambda r, c, t: raster.read(r, c, cfg.tile)), raster
        import shapely

        if lbl_path not in self._vectors:
            self._vectors[lbl_path] = read_vector_labels(lbl_path, cfg.class_field, cat.names, cat.labels, cfg.layer)
        vec = self._vectors[lbl_path].to_crs(image.crs)
        tree = shapely.STRtree(vec.geometries)
        return (lambda r, c, t: vec.rasterize(t, cfg.tile, tree)), None

    def _stem(self, region: str, img_path: Path) -> str:
        # the region leads the name once: namib_0_emb of region namib stays namib_0_emb, scene_a becomes namib_scene_a
        named = img_path.stem if fold_name(region) in fold_name(img_path.stem) else f"{region}_{img_path.stem}"
        stem = base = _safe_name(named)
        k = 1
        while stem in self._stems:
            k += 1
            stem = f"{base}-{k}"
        self._stems.add(stem)
        return stem

    def cut(self, idx: int, img_path: Path, lbl_path: Path, region: str) -> None:
        from rasterio.warp import transform_bounds

        cfg, tile, num_classes = self.config, self.config.tile, self.catalog.num_classes
        image = _open_image(img_path, cfg.in_channels)
        closer = None
        try:
            if self.ref_crs is None:
                self.ref_crs, self.ref_res = image.crs, abs(image.transform.a)
            label_tile, closer = self._labeller(lbl_path, image)
            stem = self._stem(region, img_path)
            self.sources.append(str(img_path.resolve()))
            self.crs_texts.append(_manifest_crs(image.crs))
            if cfg.patches is not None:
                positions = [(*_around(patch.box, tile, image), patch) for patch in read_patches(cfg.patches, image)]
            else:
                rows = window_starts(image.height, tile, self.stride, gaps=True)
                cols = window_starts(image.width, tile, self.stride, gaps=True)
                positions = [(r, c, None) for r in rows for c in cols]
            with progress_bar(total=len(positions), enabled=cfg.progress, desc=img_path.name,
                              unit="tile") as bar:
                for r, c, patch in positions:
                    bar.update(1)
                    values, valid = _read_tile(image, r, c, tile)
                    t = tile_transform(image.transform, r, c)
                    lbl = label_tile(r, c, t)
                    lbl[~valid] = IGNORE_INDEX
                    if patch is not None:  # labels count only inside the patch; the rest is its context
                        lbl = _inside_patch(lbl, patch, r, c, cfg.patches)
                    elif float(np.mean(lbl != IGNORE_INDEX)) < cfg.min_valid:
                        self.skipped += 1
                        continue
                    name = f"{stem}_{r:06d}_{c:06d}" if patch is None else f"{stem}_patch{patch.number:04d}"
                    write_sample(self.staging, _STAGING_SPLIT, name, values, lbl)
                    box = (t.c, t.f + t.e * tile, t.c + t.a * tile, t.f)  # minx, miny, maxx, maxy
                    if image.crs != self.ref_crs:
                        box = transform_bounds(image.crs, self.ref_crs, *box, densify_pts=21)
                    counts = np.bincount(lbl[lbl != IGNORE_INDEX].ravel(), minlength=num_classes)[:num_classes]
                    self.candidates.append(_Candidate(
                        name=name, image_index=idx, region=region, col_off=c,
                        record_row=source_rows(r, tile, image.height, image.bottom_up), transform=t,
                        box=tuple(float(v) for v in box), class_pixels=counts.astype(np.int64)))
        finally:
            image.close()
            if closer is not None:
                closer.close()


def prepare_dataset(config: PrepareConfig) -> PrepareSummary:
    """Tile, label, filter and spatially split the images of ``config`` into a seed-layout dataset."""
    images, regions, stride, fractions = _validate(config)
    out = Path(config.out)
    check_dataset_out(out, config.overwrite, SUMMARY_NAME)
    catalog = load_catalog(config.catalog)
    names, num_classes = catalog.names, catalog.num_classes
    label_paths = [Path(p) for p in config.labels]
    if len(label_paths) == 1:
        label_paths = label_paths * len(images)
    tile = config.tile

    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".prepare-", dir=out))
    done = False
    try:
        cutter = _Cutter(config, catalog, staging, stride)
        for idx, (img_path, lbl_path, region) in enumerate(zip(images, label_paths, regions)):
            cutter.cut(idx, img_path, lbl_path, region)
        candidates, skipped, ref_res = cutter.candidates, cutter.skipped, cutter.ref_res
        sources, crs_texts = cutter.sources, cutter.crs_texts
        if not candidates:
            raise InputError(f"no tile of {', '.join(map(str, images))} has at least {config.min_valid:g} of its "
                             f"pixels valid and labelled ({skipped} tried); check that the labels overlap the images "
                             "or lower --min-valid")

        boxes = np.array([cand.box for cand in candidates], dtype=np.float64).reshape(-1, 4)

        def split(block_tiles: int) -> SplitResult:
            geometry = dict(block_extent=block_tiles * stride * ref_res, seed=config.seed,
                            gap=config.buffer * tile * ref_res, tol=0.25 * ref_res)
            if config.split_by == "scene":  # whole images held out: new-scene scores beside in-scene ones
                return SplitResult(split_scenes(boxes, [sources[c.image_index] for c in candidates],
                                                [c.region for c in candidates], fractions, **geometry), [], {})
            return split_tiles(boxes, fractions, **geometry)

        if config.patches is not None:  # fine-tuning tiles: all train; the base dataset holds val and test
            result, block_tiles = SplitResult(["train"] * len(candidates), [], {}), 0
        else:
            result, block_tiles = _choose_blocks(split, config, fractions, len(candidates))

        final = staging / "dataset"
        for split in SPLITS:
            (final / IMG_DIR / split).mkdir(parents=True, exist_ok=True)
            (final / ANN_DIR / split).mkdir(parents=True, exist_ok=True)
        records: list[TileRecord] = []
        class_pixels = {s: np.zeros(num_classes, dtype=np.int64) for s in SPLITS}
        region_counts: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
        for cand, split in zip(candidates, result.splits):
            if split is None:
                continue
            os.replace(image_path(staging, _STAGING_SPLIT, cand.name), image_path(final, split, cand.name))
            os.replace(label_path(staging, _STAGING_SPLIT, cand.name), label_path(final, split, cand.name))
            class_pixels[split] += cand.class_pixels
            region_counts[split][cand.region] = region_counts[split].get(cand.region, 0) + 1
            records.append(TileRecord(
                name=cand.name, split=split, region=cand.region, source=sources[cand.image_index],
                row_off=cand.record_row, col_off=cand.col_off, height=tile, width=tile,
                crs=crs_texts[cand.image_index],
                transform=" ".join(repr(float(v)) for v in tuple(cand.transform)[:6]),
            ))
        records.sort(key=lambda rec: (SPLITS.index(rec.split), rec.name))
        tiles = result.counts()
        for name, frac in zip(SPLITS, fractions):
            if frac > 0 and tiles[name] == 0 and config.patches is None:
                log.warning("split %s received no tiles (%d kept in all); use a smaller --block-tiles, 0 (auto) or "
                            "more data", name, len(candidates) - result.num_dropped)
        summary = PrepareSummary(
            out=str(out),
            class_names=list(names),
            tiles=tiles,
            skipped_nodata=skipped,
            dropped_for_split=result.num_dropped,
            class_pixels={s: [int(v) for v in class_pixels[s]] for s in SPLITS},
            class_fraction={s: [float(v) / max(1, int(class_pixels[s].sum())) for v in class_pixels[s]] for s in SPLITS},
            regions=region_counts,
            sources=sources,
            config=_config_dict(config, stride, fractions, block_tiles),
        )

        write_manifest(final, records)
        with atomic_path(final / SUMMARY_NAME) as tmp:
            tmp.write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
        publish_dataset(final, out, SUMMARY_NAME, SPLITS)
        log.debug("prepared %d tiles in %s (%s); %d skipped for nodata, %d dropped between splits",
                 summary.total_tiles, out, ", ".join(f"{k} {v}" for k, v in tiles.items()), skipped, result.num_dropped)
        done = True
        return summary
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not done and not any(out.iterdir()):
            out.rmdir()  # leave no trace of a failed run


def _manifest_crs(crs: Any) -> str:
    """The manifest's CRS string: ``EPSG:n`` when the CRS has a code, WKT otherwise."""
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def _config_dict(config: PrepareConfig, stride: int, fractions: tuple[float, float, float],
                 block_tiles: int) -> dict[str, Any]:
    d = asdict(config)
    d = {k: ([str(p) for p in v] if isinstance(v, list) and k in ("images", "labels") else v) for k, v in d.items()}
    d["out"] = str(config.out)
    d["catalog"] = str(config.catalog) if config.catalog else None
    d["patches"] = str(config.patches) if config.patches else None
    d["stride"] = stride
    d["split"] = list(fractions)
    d["block_tiles"] = block_tiles  # the block side used (chosen when 0 was asked for)
    d.pop("progress", None)
    return d


AUTO_BLOCK_TILES = (4, 3, 2, 1)  # block sides tried by --block-tiles 0, largest (most distant splits) first
REGION_TAGS = ("REGION", "region")  # raster metadata naming an image's region (dunemap synth writes "region")


def image_region(path: Path) -> str:
    """An image's region: its REGION metadata tag when it has one, else its file stem."""
    with open_raster(path) as ds:
        tags = ds.tags()
    for key in REGION_TAGS:
        if tags.get(key, "").strip():
            return tags[key].strip()
    return path.stem


def _choose_blocks(split: Any, config: PrepareConfig, fractions: tuple[float, float, float],
                   n_tiles: int) -> tuple[SplitResult, int]:
    """Split with ``config.block_tiles``, or (0) with the largest block side that gives every asked-for split tiles."""
    if config.block_tiles:
        return split(config.block_tiles), config.block_tiles
    wanted = [name for name, frac in zip(SPLITS, fractions) if frac > 0]
    for block_tiles in AUTO_BLOCK_TILES:
        result = split(block_tiles)
        if all(result.counts()[name] for name in wanted):
            log.info("spatial blocks of %d x %d tiles give every split tiles", block_tiles, block_tiles)
            return result, block_tiles
    counts = ", ".join(f"{k} {v}" for k, v in result.counts().items())
    raise InputError(f"{n_tiles} tiles cannot fill the {'/'.join(wanted)} splits even with 1-tile blocks ({counts}); "
                     "use a smaller --tile, more or larger images, or a --split with fewer splits (e.g. 0.8,0.2,0)")
