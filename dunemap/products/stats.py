"""Area statistics of a class map: km2 per class (optionally per zone polygon), on the ellipsoid.

Pixel areas are never taken from the map's nominal pixel size. For a geographic CRS each pixel row
is a quadrangle whose area is computed on the CRS's ellipsoid (``pyproj.Geod``); for a projected
CRS every pixel's corners are projected to a Lambert azimuthal equal-area projection centred on the
map (same datum), where the planar area of each cell is its true area.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pyproj
import rasterio
import shapely
from affine import Affine
from pyproj.crs import ProjectedCRS
from pyproj.crs.coordinate_operation import LambertAzimuthalEqualAreaConversion
from rasterio.features import rasterize
from rasterio.windows import Window

from dunemap.errors import InputError
from dunemap.io.reports import claimed_report, write_report
from dunemap.products.classmap import open_class_map
from dunemap.products.mapset import is_set, resolve_maps
from dunemap.raster.legend import NODATA_CLASS, ClassLegend, read_legend
from dunemap.raster.tags import PRODUCT_TAG, product_paths
from dunemap.raster.vectors import transform_geometries

log = logging.getLogger(__name__)

STATS_BLOCK = 1024  # pixels per side of the blocks the map is read in
ALL_ZONE = "all"


class PixelAreas:
    """True pixel areas (m2) of a raster grid, computed for any window of it."""

    def __init__(self, crs: rasterio.crs.CRS, transform: Affine, height: int, width: int) -> None:
        self.crs = pyproj.CRS.from_user_input(crs.to_wkt())
        self.transform = transform
        self.height, self.width = height, width
        self._row_areas: np.ndarray | None = None
        unrotated = transform.b == 0 and transform.d == 0
        if self.crs.is_geographic and unrotated:
            self.method = "geodesic rows on " + (self.crs.ellipsoid.name if self.crs.ellipsoid else "the ellipsoid")
            self._geod = self.crs.get_geod()
            self._to_laea = None
        else:
            lon0, lat0 = self._centre_lonlat()
            laea = ProjectedCRS(
                conversion=LambertAzimuthalEqualAreaConversion(lat0, lon0), geodetic_crs=self.crs.geodetic_crs
            )
            self.method = f"Lambert azimuthal equal-area centred on ({lat0:.4f}, {lon0:.4f})"
            self._geod = None
            self._to_laea = pyproj.Transformer.from_crs(self.crs, laea, always_xy=True)

    def _centre_lonlat(self) -> tuple[float, float]:
        x, y = self.transform @ (self.width / 2.0, self.height / 2.0)
        to_geo = pyproj.Transformer.from_crs(self.crs, self.crs.geodetic_crs, always_xy=True)
        lon, lat = to_geo.transform(x, y)
        if not (np.isfinite(lon) and np.isfinite(lat)):
            raise InputError(f"the map centre ({x}, {y}) cannot be located on the ellipsoid")
        return float(lon), float(lat)

    def window(self, window: Window) -> np.ndarray:
        """(h, w) float64 areas in m2 of the pixels of ``window``."""
        r0, c0 = int(window.row_off), int(window.col_off)
        h, w = int(window.height), int(window.width)
        if self._geod is not None:
            rows = self._geodesic_rows()[r0 : r0 + h]
            return np.repeat(rows[:, np.newaxis], w, axis=1)
        cols, rows = np.meshgrid(np.arange(c0, c0 + w + 1, dtype=np.float64), np.arange(r0, r0 + h + 1, dtype=np.float64))
        t = self.transform
        xs, ys = t.a * cols + t.b * rows + t.c, t.d * cols + t.e * rows + t.f
        x, y = self._to_laea.transform(xs, ys)
        x = np.asarray(x) - x[0, 0]  # shift to the block corner: same areas, smaller numbers
        y = np.asarray(y) - y[0, 0]
        # shoelace over each cell's corners: top-left, top-right, bottom-right, bottom-left
        x00, x01, x11, x10 = x[:-1, :-1], x[:-1, 1:], x[1:, 1:], x[1:, :-1]
        y00, y01, y11, y10 = y[:-1, :-1], y[:-1, 1:], y[1:, 1:], y[1:, :-1]
        twice = (x00 * y01 - x01 * y00) + (x01 * y11 - x11 * y01) + (x11 * y10 - x10 * y11) + (x10 * y00 - x00 * y10)
        return np.abs(twice) / 2.0

    def _geodesic_rows(self) -> np.ndarray:
        if self._row_areas is None:
            t = self.transform
            lons = [t.c, t.c + t.a, t.c + t.a, t.c]  # one pixel's width: every pixel of a row has the same area
            areas = np.empty(self.height, dtype=np.float64)
            for r in range(self.height):
                top, bottom = t.f + r * t.e, t.f + (r + 1) * t.e
                area, _ = self._geod.polygon_area_perimeter(lons, [top, top, bottom, bottom])
                areas[r] = abs(area)
            self._row_areas = areas
        return self._row_areas


@dataclass
class Zone:
    name: str
    geometry: shapely.Geometry  # in the map's CRS


def read_zones(path: str | os.PathLike, map_crs: rasterio.crs.CRS, field_name: str | None = None) -> list[Zone]:
    """Read zone polygons (any OGR vector file) reprojected to the map's CRS; names from ``field_name``."""
    import pyogrio.raw
    from pyogrio.errors import DataSourceError

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: zones file not found")
    try:
        meta, _, wkb, values = pyogrio.raw.read(path, columns=[field_name] if field_name else [])
    except DataSourceError as exc:
        raise InputError(f"{path}: cannot read zones ({exc})") from None
    fields = list(meta.get("fields", []))
    if field_name and field_name not in fields:
        raise InputError(f"{path}: no field {field_name!r}; fields are {fields}")
    geoms = shapely.from_wkb(wkb)
    if not meta.get("crs"):
        raise InputError(f"{path}: the zones have no CRS; give them one (e.g. ogr2ogr -a_srs) so they can be "
                         "placed on the map")
    if map_crs is not None:
        src = pyproj.CRS.from_user_input(meta["crs"])
        dst = pyproj.CRS.from_user_input(map_crs.to_wkt())
        if not src.equals(dst):
            geoms = transform_geometries(geoms, pyproj.Transformer.from_crs(src, dst, always_xy=True))
    zones = []
    for i, g in enumerate(geoms):
        if g is None or g.is_empty:
            continue
        if g.geom_type not in ("Polygon", "MultiPolygon"):
            raise InputError(f"{path}: feature {i} is a {g.geom_type}; zones must be polygons")
        name = str(values[0][i]) if field_name else f"zone_{i}"
        zones.append(Zone(name, g))
    if not zones:
        raise InputError(f"{path}: no polygon zones found")
    return zones


@dataclass
class ClassArea:
    zone: str
    class_id: int
    class_name: str
    pixels: int
    area_km2: float
    fraction: float  # of the zone's mapped (non-nodata) area
    inside_km2: float | None = None  # inside the area of applicability (None: the map has no applicability companion)
    outside_km2: float | None = None


@dataclass
class AreaStats:
    """Per-zone, per-class areas of a class map and where they were written."""

    map_path: Path
    rows: list[ClassArea]
    method: str
    csv_path: Path | None = None
    json_path: Path | None = None
    zones: list[str] = field(default_factory=list)
    applicability: Path | None = None  # the companion the inside/outside areas come from
    maps: list[Path] = field(default_factory=list)  # the maps of a set, summed (empty for one map)

    def table(self) -> str:
        aoa = self.applicability is not None
        lines = [f"{'zone':<16} {'class':<28} {'area_km2':>12} {'fraction':>9}"
                 + (f" {'inside_km2':>12} {'outside_km2':>12}" if aoa else "")]
        for r in self.rows:
            if r.pixels:
                lines.append(f"{r.zone[:16]:<16} {f'{r.class_id} {r.class_name}'[:28]:<28} {r.area_km2:>12.4f} {r.fraction:>9.4f}"
                             + (f" {r.inside_km2:>12.4f} {r.outside_km2:>12.4f}" if aoa else ""))
        return "\n".join(lines)


def class_areas(
    map_path: str | os.PathLike, zones: str | os.PathLike | None = None, zone_field: str | None = None
) -> AreaStats:
    """Area in km2 of each class of a class map, over the whole map or inside each zone polygon.

    When the map's ``MAP_applicability.tif`` companion is beside it, each area is also split into
    the parts inside and outside the area of applicability.
    """
    map_path = Path(map_path)
    companion = product_paths(map_path)["applicability"]
    with open_class_map(map_path, "its pixel areas are unknown") as src, _applicability_mask(companion, src) as aoa:
        aoa_path = None if aoa is None else companion
        legend = read_legend(src)
        areas = PixelAreas(src.crs, src.transform, src.height, src.width)
        zone_list = read_zones(zones, src.crs, zone_field) if zones else None
        names = [z.name for z in zone_list] if zone_list else [ALL_ZONE]
        area_sum = np.zeros((len(names), 256), dtype=np.float64)  # m2
        inside_sum = np.zeros((len(names), 256), dtype=np.float64)  # m2 inside the area of applicability
        counts = np.zeros((len(names), 256), dtype=np.int64)
        for r0 in range(0, src.height, STATS_BLOCK):
            for c0 in range(0, src.width, STATS_BLOCK):
                win = Window(c0, r0, min(STATS_BLOCK, src.width - c0), min(STATS_BLOCK, src.height - r0))
                classes = src.read(1, window=win)
                pix = areas.window(win)
                inside = None if aoa is None else aoa.read(2, window=win) == 1
                if zone_list is None:
                    masks = [np.ones(classes.shape, dtype=bool)]
                else:
                    masks = _zone_masks(zone_list, src.transform @ Affine.translation(c0, r0), classes.shape)
                for z, mask in enumerate(masks):
                    if mask is None:
                        continue
                    c = classes[mask]
                    area_sum[z] += np.bincount(c, weights=pix[mask], minlength=256)
                    counts[z] += np.bincount(c, minlength=256)
                    if inside is not None:
                        inside_sum[z] += np.bincount(c, weights=pix[mask] * inside[mask], minlength=256)
    used = np.nonzero(counts[:, :NODATA_CLASS].sum(axis=0))[0]
    num = max(legend.num_classes if legend else 0, int(used.max()) + 1 if used.size else 0)
    legend = legend or ClassLegend.fallback(max(num, 1))
    rows = []
    for z, name in enumerate(names):
        total = area_sum[z, :NODATA_CLASS].sum()
        for k in range(num):
            a, a_in = area_sum[z, k], inside_sum[z, k]
            split = (float(a_in / 1e6), float((a - a_in) / 1e6)) if aoa_path else (None, None)
            rows.append(ClassArea(name, k, legend.name_of(k), int(counts[z, k]), float(a / 1e6),
                                  float(a / total) if total else 0.0, *split))
    return AreaStats(map_path, rows, areas.method, zones=names, applicability=aoa_path)


def set_class_areas(maps: Sequence[Path], name: Path, zones: str | os.PathLike | None = None,
                    zone_field: str | None = None) -> AreaStats:
    """:func:`class_areas` of a set of disjoint class maps (:mod:`dunemap.products.mapset`), summed per zone and
    class, each map measured in its own projection; the maps must share their legend."""
    parts = [class_areas(m, zones, zone_field) for m in maps]
    names: dict[int, str] = {}
    area: dict[tuple[str, int], list[float]] = {}
    for stats in parts:
        for r in stats.rows:
            if names.setdefault(r.class_id, r.class_name) != r.class_name:
                raise InputError(f"{stats.map_path}: class {r.class_id} is {r.class_name!r}, another map of the set "
                                 f"calls it {names[r.class_id]!r}; a set's maps share one legend")
            a = area.setdefault((r.zone, r.class_id), [0, 0.0, 0.0, 0.0])
            a[0] += r.pixels
            a[1] += r.area_km2
            a[2] += r.inside_km2 or 0.0
            a[3] += r.outside_km2 or 0.0
    aoa = all(p.applicability is not None for p in parts)
    zone_names = parts[0].zones
    rows = []
    for z in zone_names:
        total = sum(v[1] for (zz, _), v in area.items() if zz == z)
        for k in sorted(names):
            pixels, km2, km2_in, km2_out = area.get((z, k), [0, 0.0, 0.0, 0.0])
            rows.append(ClassArea(z, k, names[k], int(pixels), km2, km2 / total if total else 0.0,
                                  *((km2_in, km2_out) if aoa else (None, None))))
    method = "; ".join(dict.fromkeys(f"{p.map_path.name}: {p.method}" for p in parts))
    return AreaStats(Path(name), rows, method, zones=zone_names, applicability=parts[0].applicability if aoa else None,
                     maps=list(maps))


def map_areas(map_path: str | os.PathLike | Sequence[str | os.PathLike], zones: str | os.PathLike | None = None,
              zone_field: str | None = None) -> AreaStats:
    """:func:`class_areas` of one class map, or :func:`set_class_areas` of a set (maps, a zone set's folder or
    catalog: :func:`dunemap.products.mapset.resolve_maps`), named by its catalog or first map."""
    maps, catalog = resolve_maps(map_path)
    if is_set(maps, catalog):
        return set_class_areas(maps, catalog or maps[0], zones, zone_field)
    return class_areas(maps[0], zones, zone_field)


@contextlib.contextmanager
def _applicability_mask(path: Path, classes: rasterio.io.DatasetReader):
    """The open applicability companion of a class map (None when absent); it must share the map's grid."""
    if not path.is_file():
        yield None
        return
    with rasterio.open(path) as src:
        if src.tags().get(PRODUCT_TAG) != "applicability" or src.count != 2:
            raise InputError(f"{path}: not a dunemap applicability raster (expected {PRODUCT_TAG}=applicability, 2 bands)")
        if (src.height, src.width, src.transform) != (classes.height, classes.width, classes.transform):
            raise InputError(f"{path}: its grid differs from the class map's; map again with --applicability")
        yield src


def _zone_masks(zones: list[Zone], transform: Affine, shape: tuple[int, int]) -> list[np.ndarray | None]:
    h, w = shape
    x0, y0 = transform @ (0, 0)
    x1, y1 = transform @ (w, h)
    box = shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    masks: list[np.ndarray | None] = []
    for z in zones:
        if not z.geometry.intersects(box):
            masks.append(None)
            continue
        masks.append(rasterize([(z.geometry, 1)], out_shape=shape, transform=transform, fill=0, dtype="uint8").astype(bool))
    return masks


def write_area_stats(stats: AreaStats, out: str | os.PathLike) -> AreaStats:
    """Write ``stats`` as a report pair (:mod:`dunemap.io.reports`: ``out`` names the JSON or the CSV, the other
    goes beside it); returns them with the paths set."""
    columns = ["zone", "class_id", "class_name", "pixels", "area_km2", "fraction"]
    if stats.applicability is not None:
        columns += ["inside_km2", "outside_km2"]
    payload = {
        "map": str(stats.map_path),
        **({"maps": [str(m) for m in stats.maps]} if stats.maps else {}),
        "area_method": stats.method,
        "zones": [
            {
                "zone": z,
                "mapped_km2": sum(r.area_km2 for r in stats.rows if r.zone == z),
                "classes": [
                    {"id": r.class_id, "name": r.class_name, "pixels": r.pixels, "area_km2": r.area_km2, "fraction": r.fraction,
                     **({} if stats.applicability is None else {"inside_km2": r.inside_km2, "outside_km2": r.outside_km2})}
                    for r in stats.rows
                    if r.zone == z
                ],
            }
            for z in stats.zones
        ],
    }
    rows = []
    for r in stats.rows:
        row = {k: v for k, v in asdict(r).items() if k in columns}
        row.update({k: f"{row[k]:.6f}" for k in ("area_km2", "fraction", "inside_km2", "outside_km2") if k in row})
        rows.append(row)
    stats.json_path, stats.csv_path = write_report(out, payload, columns, rows)
    return stats


def map_statistics(
    map_path: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    zones: str | os.PathLike | None = None,
    zone_field: str | None = None,
    overwrite: bool = False,
    inputs: Sequence[str | os.PathLike | None] = (),
) -> AreaStats:
    """Compute :func:`class_areas` and write them as the report ``out`` names (:func:`write_area_stats`).

    ``map_path`` is one class map or a set (:func:`dunemap.products.mapset.resolve_maps`: maps, a zone set's
    folder or catalog), whose areas are summed (:func:`set_class_areas`). The pair is claimed first (locked;
    an existing one is replaced only with ``overwrite``; never over a map, ``zones`` or the other ``inputs``).
    """
    if zone_field and not zones:
        raise InputError(f"--zone-field {zone_field!r} given without --zones")
    maps, catalog = resolve_maps(map_path)
    with claimed_report(out, [*maps, catalog, zones, *inputs], overwrite=overwrite):
        stats = write_area_stats(map_areas(map_path, zones, zone_field), out)
    log.debug("wrote %s and %s (%s)", stats.csv_path, stats.json_path, stats.method)
    return stats
