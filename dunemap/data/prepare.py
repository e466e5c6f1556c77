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
import math
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dunemap.data.manifest import MANIFEST_NAME, TileRecord, write_manifest
from dunemap.data.seed_layout import (
    ANN_DIR, IGNORE_INDEX, IMG_DIR, check_dataset_out, image_path, label_path, write_sample)
from dunemap.data.splits import SPLIT_MODES, SPLITS, SplitResult, parse_fractions, split_scenes, split_tiles
from dunemap.errors import ConfigError, InputError, RasterIOError
from dunemap.io.atomic import atomic_path
from dunemap.registry import choose

log = logging.getLogger(__name__)

SUMMARY_NAME = "summary.json"
VECTOR_SUFFIXES = (".gpkg", ".shp", ".geojson", ".json", ".fgb", ".gml", ".kml", ".sqlite")
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
    tile: int = 512  # tile side
    stride: int | None = None  # step between tiles; None = tile (no overlap)
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)  # train, val, test fractions of tiles
    block_tiles: int = 0  # side of a spatial block, in tile steps; 0 = the largest of 4..1 that fills every split
    buffer: int = 0  # extra gap between tiles of different splits, in tiles (overlaps are always removed)
    split_by: str = "block"  # block | scene: hold whole images out for val/test (dunemap.data.splits.SPLIT_MODES)
    min_valid: float = 0.5  # skip tiles whose fraction of valid, labelled pixels is below this
    seed: int = 0  # seed of the block shuffle
    catalog: Path | None = None  # class catalog; None = the packaged default
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


# --------------------------------------------------------------------------- pure tile geometry


def tile_offsets(size: int, tile: int, stride: int) -> list[int]:
    """Offsets of tiles of side ``tile`` stepping by ``stride`` along an axis of ``size`` pixels.

    The last tile is shifted back to end exactly at the edge so every tile is full-size and the
    whole axis is covered; an axis shorter than ``tile`` gets one tile at 0 (padded when read).
    """
    if tile <= 0 or stride <= 0:
        raise ConfigError(f"tile {tile} and stride {stride} must be positive pixel counts")
    if size <= tile:
        return [0]
    offsets = list(range(0, size - tile + 1, stride))
    if offsets[-1] + tile < size:
        offsets.append(size - tile)
    return offsets


def north_up_transform(transform: Any, height: int, where: str = "raster") -> Any:
    """The north-up (negative y pixel size) geotransform of a raster stored north-up or bottom-up.

    Rotated or sheared geotransforms and east-to-west columns are rejected.
    """
    from affine import Affine

    a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f
    if b != 0 or d != 0:
        raise InputError(f"{where}: rotated/sheared geotransform {tuple(transform)[:6]} is not supported; "
                         "expected a north-up or bottom-up grid")
    if a <= 0 or e == 0:
        raise InputError(f"{where}: geotransform pixel size ({a}, {e}) is not supported; "
                         "expected a positive x size and a non-zero y size")
    if e > 0:
        return Affine(a, 0.0, c, 0.0, -e, f + e * height)
    return Affine(a, 0.0, c, 0.0, e, f)


def source_rows(row_off: int, height: int, raster_height: int, bottom_up: bool) -> int:
    """First stored row of the north-up rows ``[row_off, row_off + height)`` in a raster that may be bottom-up."""
    return raster_height - row_off - height if bottom_up else row_off


def tile_transform(nu_transform: Any, row_off: int, col_off: int) -> Any:
    """Geotransform of the north-up tile whose top-left pixel is (row_off, col_off).

    Same arithmetic as ``rasterio.windows.transform`` (whose ``*`` on Affine warns under affine 3), so the two agree exactly.
    """
    from affine import Affine

    t = nu_transform
    x = t.a * col_off + t.b * row_off + t.c
    y = t.d * col_off + t.e * row_off + t.f
    return Affine(t.a, t.b, t.c + (x - t.c), t.d, t.e, t.f + (y - t.f))


def class_id_for(value: Any, names: list[str], labels: list[str] | None = None) -> int | None:
    """The class id named by ``value``: an integer id (or its string) or a class name/label, case-insensitive.

    Returns None when nothing matches. Names match after folding case and treating spaces, '-' and
    '/' like '_'; catalog display labels are accepted too.
    """
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value) if 0 <= int(value) < len(names) else None
    if isinstance(value, (float, np.floating)):
        if math.isfinite(value) and float(value).is_integer():
            return class_id_for(int(value), names)
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    text = value.strip()
    if re.fullmatch(r"[+-]?\d+", text):
        return class_id_for(int(text), names)
    key = _fold(text)
    for i, name in enumerate(names):
        if _fold(name) == key:
            return i
    for i, label in enumerate(labels or []):
        if _fold(label) == key:
            return i
    return None


def _fold(text: str) -> str:
    return re.sub(r"[\s_\-/]+", "_", text.strip().casefold()).strip("_")


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "x"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# --------------------------------------------------------------------------- image and label sources


class _ImageSource:
    """An open embedding raster read through its north-up grid (pixels by the one reader's valid-pixel rule)."""

    def __init__(self, path: Path):
        import rasterio
        from rasterio.errors import RasterioIOError

        self.path = path
        try:
            self.ds = rasterio.open(path)
        except RasterioIOError as exc:
            raise RasterIOError(f"{path}: cannot open image ({_one_line(exc)})") from None
        ds = self.ds
        if ds.crs is None:
            ds.close()
            raise InputError(f"{path}: image has no CRS; expected a georeferenced GeoTIFF")
        dtypes = set(ds.dtypes)
        if dtypes != {"int8"} and not dtypes <= {"float16", "float32", "float64"}:
            ds.close()
            raise InputError(f"{path}: band dtype(s) {sorted(dtypes)} not supported; "
                             "expected float embeddings or AEF int8")
        self.height, self.width, self.count, self.crs = ds.height, ds.width, ds.count, ds.crs
        self.bottom_up = ds.transform.e > 0
        try:
            self.nu_transform = north_up_transform(ds.transform, ds.height, where=str(path))
        except InputError:
            ds.close()
            raise
        from dunemap.mapping.reader import EmbeddingReader

        self.reader = EmbeddingReader(path, bands=None)

    def close(self) -> None:
        self.reader.close()
        self.ds.close()

    def read_raw(self, ds: Any, row_off: int, col_off: int, size: int, fill: Any, band: int | None = None) -> np.ndarray:
        """Read the north-up ``size`` x ``size`` window of ``ds`` (on this grid), padding outside pixels with ``fill``."""
        if band is None:
            return _read_north_up(lambda w: ds.read(window=w), ds.height, ds.width, self.bottom_up,
                                  row_off, col_off, size, fill)
        return _read_north_up(lambda w: ds.read(band, window=w)[None], ds.height, ds.width, self.bottom_up,
                              row_off, col_off, size, fill)

    def read(self, row_off: int, col_off: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """North-up tile as (float32 (C, size, size) with 0 at nodata, bool valid mask (size, size)).

        Read through :class:`dunemap.mapping.reader.EmbeddingReader`, so training tiles and maps
        share one valid-pixel rule; pixels beyond the raster's edge are nodata.
        """
        from dunemap.mapping.windows import Box

        h, w = min(size, self.height - row_off), min(size, self.width - col_off)
        block = self.reader.read(Box(row_off, col_off, h, w))
        values = np.zeros((self.count, size, size), dtype=np.float32)
        valid = np.zeros((size, size), dtype=bool)
        values[:, :h, :w] = block.embeddings(block.box)
        valid[:h, :w] = block.valid
        return values, valid


def _read_north_up(reader: Any, height: int, width: int, bottom_up: bool, row_off: int, col_off: int, size: int,
                   fill: Any) -> np.ndarray:
    """Call ``reader(window)`` for the stored rows of a north-up tile, flip bottom-up rows, pad to ``size`` with ``fill``."""
    from rasterio.windows import Window

    h = min(size, height - row_off)
    w = min(size, width - col_off)
    data = reader(Window(col_off, source_rows(row_off, h, height, bottom_up), w, h))
    if bottom_up:
        data = data[:, ::-1, :]
    if (h, w) == (size, size):
        return np.ascontiguousarray(data)
    out = np.full((data.shape[0], size, size), fill, dtype=np.result_type(data.dtype, np.min_scalar_type(fill)))
    out[:, :h, :w] = data
    return out


class _RasterLabels:
    """A label raster that must share its image's grid (CRS, transform and shape)."""

    def __init__(self, path: Path, image: _ImageSource, num_classes: int, names: list[str]):
        import rasterio
        from rasterio.errors import RasterioIOError

        self.path, self.image, self.num_classes, self.names = path, image, num_classes, names
        try:
            self.ds = rasterio.open(path)
        except RasterioIOError as exc:
            raise RasterIOError(f"{path}: cannot open label raster ({_one_line(exc)})") from None
        ds, img = self.ds, image.ds
        if ds.crs != img.crs or (ds.height, ds.width) != (img.height, img.width) \
                or not ds.transform.almost_equals(img.transform, precision=1e-6 * abs(img.transform.a)):
            desc = (f"label raster {path} (CRS {_crs_text(ds.crs)}, {ds.width}x{ds.height} px, "
                    f"transform {_affine_text(ds.transform)}) is not on the grid of image {image.path} "
                    f"(CRS {_crs_text(img.crs)}, {img.width}x{img.height} px, transform {_affine_text(img.transform)}); "
                    "expected the same CRS, transform and shape (resample it or use polygons)")
            ds.close()
            raise InputError(desc)
        if np.dtype(ds.dtypes[0]).kind not in "iuf":
            ds.close()
            raise InputError(f"{path}: label dtype {ds.dtypes[0]} is not numeric; expected integer class ids")

    def close(self) -> None:
        self.ds.close()

    def read(self, row_off: int, col_off: int, size: int) -> np.ndarray:
        raw = self.image.read_raw(self.ds, row_off, col_off, size, fill=IGNORE_INDEX, band=1)[0]
        nodata = self.ds.nodata
        ignore = np.zeros(raw.shape, dtype=bool)
        if raw.dtype.kind == "f":
            ignore |= ~np.isfinite(raw)
        if nodata is not None and math.isfinite(nodata):
            ignore |= raw == nodata
        values = np.where(ignore, IGNORE_INDEX, raw)
        bad = (values != IGNORE_INDEX) & ((values < 0) | (values >= self.num_classes) | (values != np.round(values)))
        if bad.any():
            v = values[bad].flat[0].item()
            raise InputError(f"{self.path}: label value {v} (tile at row {row_off}, col {col_off}) is not a class id; "
                             f"valid: 0..{self.num_classes - 1} ({', '.join(self.names)}) or {IGNORE_INDEX} = unlabelled")
        return values.astype(np.uint8)


@dataclass
class VectorLabels:
    """Polygons with class ids, in one CRS; rasterised tile by tile."""

    geometries: np.ndarray  # shapely polygons, in file order (later ones win on overlap)
    class_ids: np.ndarray  # int per geometry
    crs: Any  # rasterio CRS
    source: str = ""

    def to_crs(self, crs: Any) -> "VectorLabels":
        """These polygons in ``crs``: densified, then transformed vertex by vertex with pyproj."""
        if crs == self.crs:
            return self
        import shapely
        from pyproj import Transformer

        transformer = Transformer.from_crs(self.crs.to_wkt(), crs.to_wkt(), always_xy=True)
        step = 0.0005 if self.crs.is_geographic else 50.0  # densify: ~50 m, so curved edges stay accurate
        dense = shapely.segmentize(self.geometries, step)

        def project(coords: np.ndarray) -> np.ndarray:
            x, y = transformer.transform(coords[:, 0], coords[:, 1])
            return np.column_stack([x, y])

        moved = shapely.transform(dense, project)
        bad = ~np.isfinite(shapely.bounds(moved)).all(axis=1)
        if bad.any():
            raise InputError(f"{self.source}: feature #{int(np.flatnonzero(bad)[0])} cannot be transformed from "
                             f"{_crs_text(self.crs)} to {_crs_text(crs)}; expected polygons inside the image's CRS area")
        return VectorLabels(moved, self.class_ids, crs, self.source)

    def rasterize(self, transform: Any, size: int, tree: Any = None) -> np.ndarray:
        """Burn the polygons touching the ``size`` x ``size`` tile at ``transform``; 255 where none."""
        import shapely
        from rasterio.features import rasterize

        x0, y0 = transform.c, transform.f
        x1, y1 = x0 + transform.a * size, y0 + transform.e * size
        tile_box = shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        tree = tree if tree is not None else shapely.STRtree(self.geometries)
        hits = np.sort(tree.query(tile_box, predicate="intersects"))
        if hits.size == 0:
            return np.full((size, size), IGNORE_INDEX, dtype=np.uint8)
        shapes = [(self.geometries[i], int(self.class_ids[i])) for i in hits]
        return rasterize(shapes, out_shape=(size, size), transform=transform, fill=IGNORE_INDEX, dtype="uint8")


def read_vector_labels(path: str | Path, class_field: str, names: list[str], labels: list[str] | None = None,
                       layer: str | None = None) -> VectorLabels:
    """Read polygons and their classes (ids or names) from a vector file with pyogrio.

    Every error names the file, the feature and the value: a missing field lists the fields, an
    unknown class lists the valid ids and names, non-polygon geometries are refused.
    """
    import pyogrio
    import shapely
    from rasterio.crs import CRS

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: label file not found")
    try:
        info = pyogrio.read_info(path, layer=layer)
    except Exception as exc:  # pyogrio raises its own DataSourceError/DataLayerError types
        raise InputError(f"{path}: cannot read vector labels ({_one_line(exc)})") from None
    fields = [str(f) for f in info.get("fields", [])]
    if class_field not in fields:
        raise InputError(f"{path}: no field {class_field!r}; fields: {', '.join(fields) or '(none)'} "
                         "(choose one with --class-field)")
    _meta, fids, wkb, field_data = pyogrio.raw.read(path, layer=layer, columns=[class_field], return_fids=True)
    if info.get("crs") is None:
        raise InputError(f"{path}: labels have no CRS; expected a layer with a coordinate reference system")
    crs = CRS.from_user_input(info["crs"])
    geoms = shapely.from_wkb(wkb) if len(wkb) else np.array([], dtype=object)
    values = field_data[0] if len(field_data) else np.array([])
    keep = np.ones(len(geoms), dtype=bool)
    ids = np.zeros(len(geoms), dtype=np.int64)
    fid_list = list(fids) if fids is not None else list(range(len(geoms)))
    for i, (geom, value) in enumerate(zip(geoms, values)):
        fid = fid_list[i]
        if isinstance(value, np.generic):
            value = value.item()
        if geom is None or shapely.is_empty(geom):
            keep[i] = False
            log.debug("%s: feature %s has no geometry; skipped", path, fid)
            continue
        gtype = shapely.get_type_id(geom)
        if gtype not in (3, 6):  # Polygon, MultiPolygon
            raise InputError(f"{path}: feature {fid} is a {geom.geom_type}; expected Polygon or MultiPolygon labels")
        if value is None or (isinstance(value, float) and math.isnan(value)) or np.ma.is_masked(value):
            raise InputError(f"{path}: feature {fid} has no value in field {class_field!r}; expected a class id or name")
        cid = class_id_for(value, names, labels)
        if cid is None:
            raise InputError(f"{path}: feature {fid}: class {value!r} in field {class_field!r} is not in the catalog; "
                             f"valid ids 0..{len(names) - 1} or names: {', '.join(names)}")
        ids[i] = cid
    geoms = shapely.make_valid(geoms[keep]) if keep.any() else geoms[keep]
    return VectorLabels(np.asarray(geoms, dtype=object), ids[keep], crs, str(path))


def _crs_text(crs: Any) -> str:
    if crs is None:
        return "none"
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_string()[:60]


def _affine_text(t: Any) -> str:
    return "(" + ", ".join(f"{v:g}" for v in tuple(t)[:6]) + ")"


def _is_vector(path: Path) -> bool:
    return path.suffix.lower() in VECTOR_SUFFIXES


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
        self.ref_count = 0
        self._vectors: dict[Path, VectorLabels] = {}
        self._stems: set[str] = set()

    def _labeller(self, lbl_path: Path, image: _ImageSource) -> tuple[Any, Any]:
        """A function (row, col, tile transform) -> uint8 label tile, and the object to close afterwards."""
        cfg, cat = self.config, self.catalog
        if not _is_vector(lbl_path):
            raster = _RasterLabels(lbl_path, image, cat.num_classes, cat.names)
            return (lambda r, c, t: raster.read(r, c, cfg.tile)), raster
        import shapely

        if lbl_path not in self._vectors:
            self._vectors[lbl_path] = read_vector_labels(lbl_path, cfg.class_field, cat.names, cat.labels, cfg.layer)
        vec = self._vectors[lbl_path].to_crs(image.crs)
        tree = shapely.STRtree(vec.geometries)
        return (lambda r, c, t: vec.rasterize(t, cfg.tile, tree)), None

    def _stem(self, region: str, img_path: Path) -> str:
        # the region leads the name once: namib_0_emb of region namib stays namib_0_emb, scene_a becomes namib_scene_a
        named = img_path.stem if _fold(region) in _fold(img_path.stem) else f"{region}_{img_path.stem}"
        stem = base = _safe_name(named)
        k = 1
        while stem in self._stems:
            k += 1
            stem = f"{base}-{k}"
        self._stems.add(stem)
        return stem

    def cut(self, idx: int, img_path: Path, lbl_path: Path, region: str) -> None:
        from rasterio.warp import transform_bounds
        from tqdm.auto import tqdm

        cfg, tile, num_classes = self.config, self.config.tile, self.catalog.num_classes
        image = _ImageSource(img_path)
        closer = None
        try:
            if self.ref_crs is None:
                self.ref_crs, self.ref_res, self.ref_count = image.crs, abs(image.nu_transform.a), image.count
            elif image.count != self.ref_count:
                raise InputError(f"{img_path}: has {image.count} bands but the first image has {self.ref_count}; "
                                 "expected every image to carry the same embedding bands")
            label_tile, closer = self._labeller(lbl_path, image)
            stem = self._stem(region, img_path)
            self.sources.append(str(img_path.resolve()))
            self.crs_texts.append(_manifest_crs(image.crs))
            rows = tile_offsets(image.height, tile, self.stride)
            cols = tile_offsets(image.width, tile, self.stride)
            with tqdm(total=len(rows) * len(cols), desc=img_path.name, unit="tile",
                      disable=None if cfg.progress else True) as bar:
                for r in rows:
                    for c in cols:
                        bar.update(1)
                        values, valid = image.read(r, c, tile)
                        t = tile_transform(image.nu_transform, r, c)
                        lbl = label_tile(r, c, t)
                        lbl[~valid] = IGNORE_INDEX
                        if float(np.mean(lbl != IGNORE_INDEX)) < cfg.min_valid:
                            self.skipped += 1
                            continue
                        name = f"{stem}_{r:06d}_{c:06d}"
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
    from dunemap.knowledge.catalog import load_catalog

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
            if frac > 0 and tiles[name] == 0:
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
        for name in (IMG_DIR, ANN_DIR, MANIFEST_NAME, SUMMARY_NAME):
            old = out / name
            if old.is_dir():
                shutil.rmtree(old)
            elif old.exists():
                old.unlink()
            os.replace(final / name, old)
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
    d["stride"] = stride
    d["split"] = list(fractions)
    d["block_tiles"] = block_tiles  # the block side used (chosen when 0 was asked for)
    d.pop("progress", None)
    return d


AUTO_BLOCK_TILES = (4, 3, 2, 1)  # block sides tried by --block-tiles 0, largest (most distant splits) first
REGION_TAGS = ("REGION", "region")  # raster metadata naming an image's region (dunemap synth writes "region")


def image_region(path: Path) -> str:
    """An image's region: its REGION metadata tag when it has one, else its file stem."""
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        with rasterio.open(path) as ds:
            tags = ds.tags()
    except RasterioIOError as exc:
        raise RasterIOError(f"{path}: cannot open image ({_one_line(exc)})") from None
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
