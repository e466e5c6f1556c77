"""Helpers shared by the product tests: class maps written the way ``dunemap map`` writes them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.crs import CRS

from dunemap.mapping.writer import GridSpec, PartialMap
from dunemap.raster.geometry import Box
from dunemap.raster.legend import ClassLegend

LEGEND = ClassLegend.build(["interdune", "crescentic", "linear", "star"],
                           [(210, 200, 180), (230, 120, 0), (20, 90, 200), (160, 30, 120)])


def write_class_map(path: Path, classes: np.ndarray, crs: str, transform: Affine, legend: ClassLegend = LEGEND) -> Path:
    """A class-map COG with legend and colour table, written through the mapping writer."""
    h, w = classes.shape
    partial = PartialMap(path, GridSpec(h, w, CRS.from_string(crs), transform), legend, 16 * ((max(h, w) + 15) // 16))
    partial.create()
    partial.write_block(Box(0, 0, h, w), classes.astype(np.uint8))
    return partial.finalize(cog_tile=128)["classes"]


ZONE_SET_BBOX = (17.985, -24.01, 18.015, -23.995)  # WGS84 W S E N across the 33S / 34S border (18°E)
ZONE_SET_PIXEL = 50.0  # metres


def zone_set_truth(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """The classes of the ground at (lon, lat): bands that cross the zone border, and a class on each side only."""
    up = lat - ZONE_SET_BBOX[1]
    c = np.zeros(np.shape(lon), dtype=np.uint8)
    c[up < 0.005] = 1  # both zones
    c[(up >= 0.005) & (up < 0.010) & (lon > 18.007)] = 2  # zone 34S only
    c[(up > 0.011) & (lon < 17.992)] = 3  # zone 33S only
    return c


def write_zone_set(folder: Path, margin: int = 3) -> Path:
    """A zone set as ``dunemap map --index`` writes it, without the model: ``utm33S.tif`` and ``utm34S.tif`` (class
    COGs of :func:`zone_set_truth` in their zones' CRSs, nodata on the other zone's ground and outside the box,
    ``margin`` pixels of it around) and ``catalog.json`` / ``catalog.csv`` from the archive's catalog writer."""
    from pyproj import Transformer
    from rasterio.warp import transform_bounds

    from dunemap.acquire.archive import CATALOG_COLUMNS, ArchiveConfig, ZonePlan, catalog_record, owned_box
    from dunemap.io.reports import write_report
    from dunemap.products.mapset import CATALOG_NAME
    from dunemap.raster.zones import ZoneView, utm_zone_name

    config = ArchiveConfig(index="aef_index.parquet", year=2023, out=folder, bbox=ZONE_SET_BBOX)
    plans = []
    for epsg in (32733, 32734):
        bounds = transform_bounds("EPSG:4326", f"EPSG:{epsg}", *owned_box(epsg, ZONE_SET_BBOX), densify_pts=21)
        view = ZoneView(epsg, ZONE_SET_BBOX, bounds)
        x0 = (np.floor(bounds[0] / ZONE_SET_PIXEL) - margin) * ZONE_SET_PIXEL
        y0 = (np.ceil(bounds[3] / ZONE_SET_PIXEL) + margin) * ZONE_SET_PIXEL
        w = int(np.ceil(bounds[2] / ZONE_SET_PIXEL) + margin - (x0 / ZONE_SET_PIXEL))
        h = int((y0 / ZONE_SET_PIXEL) - np.floor(bounds[1] / ZONE_SET_PIXEL) + margin)
        transform = Affine(ZONE_SET_PIXEL, 0, x0, 0, -ZONE_SET_PIXEL, y0)
        rows, cols = np.mgrid[0:h, 0:w]
        x, y = transform @ (cols + 0.5, rows + 0.5)
        lon, lat = Transformer.from_crs(epsg, 4326, always_xy=True).transform(x, y)
        classes = np.where(view.owned(transform, Box(0, 0, h, w)), zone_set_truth(lon, lat), 255)
        zone = utm_zone_name(epsg)
        out = write_class_map(folder / f"utm{zone}.tif", classes, f"EPSG:{epsg}", transform)
        plans.append((ZonePlan(zone, epsg, (), view, out), None))
    record, rows = catalog_record(config, plans, [])
    write_report(folder / CATALOG_NAME, record, CATALOG_COLUMNS, rows)
    return folder
