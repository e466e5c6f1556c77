"""Expert labels for training tiles: polygons (any vector format, any CRS) or a label raster on the image's grid.

Classes are given as catalog ids or names (:func:`class_id_for`). Polygons are read with pyogrio,
moved into each image's CRS and burnt tile by tile (later features win on overlap); a label raster
must cover its image's grid and is read through the same north-up rows as the embeddings. Every
error names the file and the feature or value at fault.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dunemap.data.seed_layout import IGNORE_INDEX
from dunemap.errors import InputError, RasterIOError
from dunemap.raster.geometry import Box
from dunemap.raster.reader import EmbeddingReader, open_raster, read_north_up
from dunemap.raster.transform import north_up_transform

log = logging.getLogger(__name__)

VECTOR_SUFFIXES = (".gpkg", ".shp", ".geojson", ".json", ".fgb", ".gml", ".kml", ".sqlite")


def is_vector(path: Path) -> bool:
    """Whether ``path`` names a vector file (by its suffix), as opposed to a label raster."""
    return path.suffix.lower() in VECTOR_SUFFIXES


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


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
    key = fold_name(text)
    for i, name in enumerate(names):
        if fold_name(name) == key:
            return i
    for i, label in enumerate(labels or []):
        if fold_name(label) == key:
            return i
    return None


def fold_name(text: str) -> str:
    """A class or region name folded for matching: case, spaces, '-' and '/' do not count."""
    return re.sub(r"[\s_\-/]+", "_", text.strip().casefold()).strip("_")


class RasterLabels:
    """A label raster that must share its image's grid (CRS, north-up transform and shape)."""

    def __init__(self, path: Path, image: EmbeddingReader, num_classes: int, names: list[str]):
        self.path, self.num_classes, self.names = path, num_classes, names
        ds = self.ds = open_raster(path)
        self.bottom_up = ds.transform.e > 0
        try:
            transform = north_up_transform(ds.transform, ds.height, where=str(path))
        except InputError:
            ds.close()
            raise
        if ds.crs != image.crs or (ds.height, ds.width) != (image.height, image.width) \
                or not transform.almost_equals(image.transform, precision=1e-6 * abs(image.transform.a)):
            desc = (f"label raster {path} (CRS {crs_text(ds.crs)}, {ds.width}x{ds.height} px, "
                    f"transform {_affine_text(transform)}) is not on the grid of image {image.path} "
                    f"(CRS {crs_text(image.crs)}, {image.width}x{image.height} px, "
                    f"transform {_affine_text(image.transform)}); "
                    "expected the same CRS, transform and shape (resample it or use polygons)")
            ds.close()
            raise InputError(desc)
        if np.dtype(ds.dtypes[0]).kind not in "iuf":
            ds.close()
            raise InputError(f"{path}: label dtype {ds.dtypes[0]} is not numeric; expected integer class ids")

    def close(self) -> None:
        self.ds.close()

    def read(self, row_off: int, col_off: int, size: int) -> np.ndarray:
        """The (size, size) uint8 class ids of the north-up tile at (row_off, col_off); 255 outside the raster."""
        h, w = min(size, self.ds.height - row_off), min(size, self.ds.width - col_off)
        try:
            raw = read_north_up(self.ds, Box(row_off, col_off, h, w), self.bottom_up, indexes=1)[0]
        except Exception as exc:  # rasterio's read errors
            raise RasterIOError(f"{self.path}: cannot read labels at row {row_off}, col {col_off} "
                                f"({one_line(exc)})") from None
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
        out = np.full((size, size), IGNORE_INDEX, dtype=np.uint8)
        out[:h, :w] = values
        return out


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

        from dunemap.raster.vectors import transform_geometries  # deferred: shapely, only for vector labels

        transformer = Transformer.from_crs(self.crs.to_wkt(), crs.to_wkt(), always_xy=True)
        step = 0.0005 if self.crs.is_geographic else 50.0  # densify: ~50 m, so curved edges stay accurate
        moved = transform_geometries(self.geometries, transformer, step)
        bad = ~np.isfinite(shapely.bounds(moved)).all(axis=1)
        if bad.any():
            raise InputError(f"{self.source}: feature #{int(np.flatnonzero(bad)[0])} cannot be transformed from "
                             f"{crs_text(self.crs)} to {crs_text(crs)}; expected polygons inside the image's CRS area")
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


def default_layer(path: Path, layer: str | None) -> str | None:
    """``layer``, or when None the file's first layer with geometries: a GeoPackage styled in QGIS (or by
    dunemap) also holds the non-spatial ``layer_styles`` table, which is not a layer to read."""
    import pyogrio

    if layer is not None:
        return layer
    try:
        spatial = [str(name) for name, geometry in pyogrio.list_layers(path) if geometry is not None]
    except Exception:  # unreadable: the caller's read names the problem
        return None
    return spatial[0] if spatial else None


def vector_layer(path: Path, layer: str | None, file: str, content: str, things: str) -> tuple[str | None, dict]:
    """The layer of ``path`` to read (:func:`default_layer`) and pyogrio's description of it. A missing file, an
    unreadable one and a layer without a CRS are each one line: "PATH: {file} not found", "PATH: cannot read
    {content} (...)", "PATH: {things} have no CRS ..."."""
    import pyogrio

    if not path.exists():
        raise InputError(f"{path}: {file} not found")
    layer = default_layer(path, layer)
    try:
        info = pyogrio.read_info(path, layer=layer)
    except Exception as exc:  # pyogrio raises its own DataSourceError/DataLayerError types
        raise InputError(f"{path}: cannot read {content} ({one_line(exc)})") from None
    if info.get("crs") is None:
        raise InputError(f"{path}: {things} have no CRS; expected a layer with a coordinate reference system")
    return layer, info


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
    layer, info = vector_layer(path, layer, "label file", "vector labels", "labels")
    fields = [str(f) for f in info.get("fields", [])]
    if class_field not in fields:
        raise InputError(f"{path}: no field {class_field!r}; fields: {', '.join(fields) or '(none)'} "
                         "(choose one with --class-field)")
    _meta, fids, wkb, field_data = pyogrio.raw.read(path, layer=layer, columns=[class_field], return_fids=True)
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


def crs_text(crs: Any) -> str:
    """A CRS in a few words for messages: ``EPSG:n``, or the start of its description."""
    if crs is None:
        return "none"
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_string()[:60]


def _affine_text(t: Any) -> str:
    return "(" + ", ".join(f"{v:g}" for v in tuple(t)[:6]) + ")"
