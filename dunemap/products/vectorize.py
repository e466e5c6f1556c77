"""Vectorise a class map, or a set of zone maps, into one vector file: a polygon per connected patch of a class.

The format follows the output's extension (:mod:`dunemap.io.formats`: GeoPackage, Shapefile,
GeoJSON, FlatGeobuf, GeoParquet); a GeoPackage also gets the class colours and names as the layer's
default QGIS style (its ``layer_styles`` table).

The map is traced block by block (``rasterio.features.shapes``) in integer pixel coordinates, so
patches cut by block seams share exact edges and are dissolved back together before being placed
on the map's grid. Areas are measured on the ellipsoid: geodesic polygons for geographic maps,
a map-centred Lambert azimuthal equal-area projection otherwise.

A set (a zone set's folder or catalog, or maps: :mod:`dunemap.products.mapset`) gives one layer in one CRS,
:data:`dunemap.products.mapset.SET_CRS`, with a ``zone`` attribute. Each map is traced and its polygons'
areas measured in its own projection, as for one map; then the polygons are densified
(:data:`SET_DENSIFY_PIXELS`) and carried to that CRS. A patch cut by a zone border is two polygons, one per
zone, and their edges there need not meet exactly: the zones' pixel grids do not line up.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pyproj
import rasterio
import shapely
import shapely.geometry
from affine import Affine
from pyproj.crs import ProjectedCRS
from pyproj.crs.coordinate_operation import LambertAzimuthalEqualAreaConversion
from rasterio.crs import CRS
from rasterio.features import shapes
from rasterio.windows import Window

from dunemap.errors import InputError
from dunemap.io.formats import file_set, supports_layers, write_vectors
from dunemap.io.outputs import OutputExistsError
from dunemap.products.classmap import labelled, open_class_map, set_legend
from dunemap.products.mapset import SET_CRS, is_set, resolve_maps, zone_label
from dunemap.raster.legend import NODATA_CLASS, ClassLegend
from dunemap.raster.vectors import transform_geometries

log = logging.getLogger(__name__)

VECTORIZE_BLOCK = 2048  # pixels per side of the blocks traced at a time
LAYER = "landforms"
SET_DENSIFY_PIXELS = 64  # a set's polygon edges are cut into pieces of at most this many pixels before reprojection


@dataclass
class VectorizeResult:
    path: Path
    polygons: int
    dropped_small: int  # patches below the minimum area
    per_class: dict[str, int]


class AreaMeter:
    """True areas (m2) of polygons given in a CRS's coordinates."""

    def __init__(self, crs: rasterio.crs.CRS, centre: tuple[float, float]) -> None:
        self.crs = pyproj.CRS.from_user_input(crs.to_wkt())
        if self.crs.is_geographic:
            self._geod = self.crs.get_geod()
            self._to_laea = None
        else:
            to_geo = pyproj.Transformer.from_crs(self.crs, self.crs.geodetic_crs, always_xy=True)
            lon, lat = to_geo.transform(*centre)
            laea = ProjectedCRS(conversion=LambertAzimuthalEqualAreaConversion(lat, lon), geodetic_crs=self.crs.geodetic_crs)
            self._geod = None
            self._to_laea = pyproj.Transformer.from_crs(self.crs, laea, always_xy=True)

    def area(self, geom: shapely.Geometry) -> float:
        if self._geod is not None:
            return abs(self._geod.geometry_area_perimeter(geom)[0])
        return float(transform_geometries(geom, self._to_laea).area)


def _to_map(geom: shapely.Geometry, t: Affine) -> shapely.Geometry:
    """Pixel (col, row) coordinates to map coordinates."""
    return shapely.transform(geom, lambda xy: np.column_stack((
        t.a * xy[:, 0] + t.b * xy[:, 1] + t.c, t.d * xy[:, 0] + t.e * xy[:, 1] + t.f)))


def trace_patches(
    src: rasterio.io.DatasetReader, classes: Sequence[int] | None = None, block: int = VECTORIZE_BLOCK
) -> list[tuple[int, shapely.Geometry]]:
    """(class id, polygon in pixel coordinates) for every 4-connected patch of the selected classes."""
    wanted = np.zeros(256, dtype=bool)
    wanted[list(classes) if classes is not None else slice(0, NODATA_CLASS)] = True
    wanted[NODATA_CLASS] = False
    done: list[tuple[int, shapely.Geometry]] = []
    seam: dict[int, list[shapely.Geometry]] = defaultdict(list)  # patches touching a block seam
    for r0 in range(0, src.height, block):
        for c0 in range(0, src.width, block):
            h, w = min(block, src.height - r0), min(block, src.width - c0)
            data = src.read(1, window=Window(c0, r0, w, h))
            mask = wanted[data]
            if not mask.any():
                continue
            offset = Affine.translation(c0, r0)
            for geo, value in shapes(data, mask=mask, connectivity=4, transform=offset):
                poly = shapely.geometry.shape(geo)
                x0, y0, x1, y1 = poly.bounds
                on_seam = (x0 == c0 and c0 > 0) or (y0 == r0 and r0 > 0) or (
                    x1 == c0 + w and c0 + w < src.width) or (y1 == r0 + h and r0 + h < src.height)
                if on_seam:
                    seam[int(value)].append(poly)
                else:
                    done.append((int(value), poly))
    for value, parts in seam.items():
        merged = shapely.union_all(parts)
        done.extend((value, g) for g in shapely.get_parts(merged) if g.geom_type == "Polygon")
    done.sort(key=lambda item: (item[0], item[1].bounds[1], item[1].bounds[0]))
    return done


def _existing_geopackage(out: Path, layer: str, overwrite: bool) -> bool:
    """Whether ``out`` is a GeoPackage whose other layers must be kept; refuse to replace what needs ``overwrite``.

    Single-layer formats (Shapefile, GeoJSON, ...) are replaced as a whole, only with ``overwrite``.
    """
    import pyogrio
    from pyogrio.errors import DataSourceError

    if not supports_layers(out):
        existing = [p for p in file_set(out) if p.exists() or p.is_symlink()]
        if existing and not overwrite:
            raise OutputExistsError(f"{existing[-1]}: already exists; pass --overwrite to replace it")
        return False
    if not out.exists():
        return False
    try:
        layers = [str(name) for name, _ in pyogrio.list_layers(out)]
        is_gpkg = out.read_bytes()[:16].startswith(b"SQLite format 3")
    except (DataSourceError, OSError):
        layers, is_gpkg = [], False
    if not is_gpkg:
        if not overwrite:
            raise OutputExistsError(f"{out}: already exists and is not a GeoPackage; pass --overwrite to replace it")
        return False
    if layer in layers and not overwrite:
        raise OutputExistsError(f"{out}: already has a layer {layer!r}; choose another --layer or pass --overwrite "
                                "to replace that layer (the other layers are kept)")
    return True


def vectorize_map(
    map_path: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    min_area_m2: float = 0.0,
    classes: Sequence[int] | None = None,
    layer: str = LAYER,
    overwrite: bool = False,
) -> VectorizeResult:
    """Write a polygon per connected patch of each class (optionally only ``classes``) to ``out``.

    ``map_path`` is a class map or a set (maps, a zone set's folder or catalog; module docstring). The
    format follows ``out``'s extension (:func:`dunemap.io.formats.vector_driver`). Patches smaller than
    ``min_area_m2`` are dropped. Attributes: ``class_id``, ``class_name``, ``area_m2`` (true area on the
    ellipsoid) and, for a set, ``zone``. An existing GeoPackage keeps its other layers: the layer is written
    into a copy that replaces the file when complete; a layer it already has is replaced only with
    ``overwrite``. Any other existing output is replaced (with all its sidecar files) only with ``overwrite``.
    """
    maps, catalog = resolve_maps(map_path)
    out = Path(out)
    if min_area_m2 < 0:
        raise InputError(f"minimum area must be >= 0 m2, got {min_area_m2}")
    if classes is not None and any(not 0 <= c < NODATA_CLASS for c in classes):
        raise InputError(f"class ids must be in 0..{NODATA_CLASS - 1}; got {list(classes)}")
    keep_existing = _existing_geopackage(out, layer, overwrite)
    legend = labelled(set_legend(maps, "polygon areas would be meaningless")) or ClassLegend.fallback(NODATA_CLASS - 1)
    one = not is_set(maps, catalog)
    ids, names, areas, geoms, zones = [], [], [], [], []
    dropped = 0
    per_class: dict[str, int] = defaultdict(int)
    for m in maps:
        with open_class_map(m, "polygon areas would be meaningless") as src:
            transform, crs = src.transform, src.crs
            b = src.bounds
            meter = AreaMeter(crs, ((b.left + b.right) / 2, (b.bottom + b.top) / 2))
            patches = trace_patches(src, classes)
        to_set = None if one else pyproj.Transformer.from_crs(crs.to_wkt(), SET_CRS, always_xy=True)
        step, zone = SET_DENSIFY_PIXELS * max(abs(transform.a), abs(transform.e)), zone_label(m, crs.to_epsg())
        for value, poly in patches:
            geom = _to_map(poly, transform)
            area = meter.area(geom)  # in the map's own projection, before any reprojection
            if area < min_area_m2:
                dropped += 1
                continue
            if to_set is not None:
                geom = transform_geometries(geom, to_set, step)
                zones.append(zone)
            ids.append(value)
            names.append(legend.name_of(value))
            areas.append(area)
            geoms.append(geom)
            per_class[legend.name_of(value)] += 1
    field_data = [np.asarray(ids, dtype=np.int32), np.asarray(names, dtype=object), np.asarray(areas, dtype=np.float64)]
    field_names = ["class_id", "class_name", "area_m2"]
    if not one:
        field_data.append(np.asarray(zones, dtype=object))
        field_names.append("zone")
    write_vectors(out, np.asarray(shapely.to_wkb(geoms), dtype=object) if geoms else np.empty(0, dtype=object),
                  field_data, field_names, layer=layer, geometry_type="Polygon",
                  crs=crs.to_wkt() if one else CRS.from_user_input(SET_CRS).to_wkt(), keep_layers=keep_existing,
                  style_qml=legend.vector_qml("class_id"))
    log.debug("wrote %d polygons to %s (%d below %g m2 dropped)", len(geoms), out, dropped, min_area_m2)
    return VectorizeResult(out, len(geoms), dropped, dict(per_class))
