"""Earth Engine export of the AEF annual embedding over a region preset or bbox: a Code Editor script or a Python task.

Both build the same export: ``GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL`` filtered to the year and the
area, mosaicked, bands A00..A63 as float32, written to Google Drive as GeoTIFF at 10 m in the area's
UTM CRS. Earth Engine splits large exports into several files sharing the prefix.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from dunemap.acquire.index import BBox, check_year, resolve_area
from dunemap.errors import ConfigError

COLLECTION = "GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL"
BANDS: tuple[str, ...] = tuple(f"A{i:02d}" for i in range(64))
SCALE_M = 10
MAX_PIXELS = 1e13
BYTES_PER_PIXEL = 4 * len(BANDS)  # 64 float32 bands
WARN_BYTES = 10e9  # gee-script and fetch-gee warn above this expected export size


@dataclass(frozen=True)
class GeeExport:
    """One Export.image.toDrive job."""

    name: str  # region preset or bbox label
    bbox: BBox  # west, south, east, north (degrees)
    year: int
    crs: str  # e.g. EPSG:32733
    description: str  # task name shown in Earth Engine
    file_prefix: str  # Drive file name prefix
    folder: str | None = None  # Drive folder; None = Drive root
    scale: float = SCALE_M
    max_pixels: float = MAX_PIXELS

    @property
    def start_date(self) -> str:
        return f"{self.year}-01-01"

    @property
    def end_date(self) -> str:  # exclusive
        return f"{self.year + 1}-01-01"

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) in output pixels: the bbox projected to ``crs`` (edges densified), cut into pixels of
        ``scale`` metres (Earth Engine's nominal scale: in a geographic CRS a pixel spans ``scale`` metres of the
        equator's arc, in a projected CRS ``scale`` metres of its linear unit)."""
        import math

        from pyproj import Transformer

        transformer = Transformer.from_crs("EPSG:4326", self.crs, always_xy=True)
        minx, miny, maxx, maxy = transformer.transform_bounds(*self.bbox, densify_pts=21)
        pixel = self.scale / crs_unit_metres(self.crs)  # pixel side in the CRS's own units
        return math.ceil((maxy - miny) / pixel), math.ceil((maxx - minx) / pixel)

    @property
    def pixels(self) -> int:
        height, width = self.shape
        return height * width

    @property
    def size_bytes(self) -> int:
        """Expected uncompressed size of the export: pixels x 64 bands x 4 bytes (float32)."""
        return self.pixels * BYTES_PER_PIXEL

    def size_text(self) -> str:
        height, width = self.shape
        return (f"expected export: {width} x {height} = {self.pixels:,} pixels x {len(BANDS)} float32 bands = "
                f"{self.size_bytes:,} bytes ({self.size_bytes / 1e9:.1f} GB) before compression")


EQUATOR_RADIUS_M = 6_378_137.0  # WGS84: Earth Engine turns a scale in metres into degrees along the equator


def crs_unit_metres(crs: str) -> float:
    """Metres in one unit of ``crs``'s first axis: a projected CRS's linear unit, or (geographic) one angular unit's
    arc along the equator. ``crs`` must be valid (:func:`check_crs`)."""
    from pyproj import CRS

    parsed = CRS.from_user_input(crs)
    factor = parsed.axis_info[0].unit_conversion_factor  # metres per unit; radians per unit for an angle
    return factor * EQUATOR_RADIUS_M if parsed.is_geographic else factor


def check_crs(crs: str) -> str:
    """``crs`` when it is an ``EPSG:n`` code PROJ knows, else one ConfigError quoting it."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    if not re.fullmatch(r"EPSG:\d{4,6}", crs):
        raise ConfigError(f"crs {crs!r} must look like EPSG:32733 for an Earth Engine export")
    try:
        CRS.from_user_input(crs)
    except CRSError:
        raise ConfigError(f"crs {crs!r} is not a known EPSG code; expected e.g. EPSG:32733 (UTM 33S) or "
                          "EPSG:4326") from None
    return crs


def plan_export(year: int, region: str | None = None, bbox: tuple[float, ...] | None = None, crs: str | None = None,
                out_prefix: str | None = None, folder: str | None = None) -> GeeExport:
    """The export for a region preset (its UTM zone) or a bbox (UTM zone of its centre unless ``crs``)."""
    year = check_year(year)
    name, box, epsg = resolve_area(region, bbox)
    crs = check_crs(crs or f"EPSG:{epsg}")
    prefix = out_prefix or f"aef_{name}_{year}"
    if not re.fullmatch(r"[A-Za-z0-9_.,:;\-]{1,100}", prefix):
        raise ConfigError(f"output prefix {prefix!r} must be 1-100 letters, digits or _ . , : ; - (Earth Engine rule)")
    return GeeExport(name=name, bbox=box, year=year, crs=crs, description=prefix, file_prefix=prefix, folder=folder)


def gee_script(export: GeeExport) -> str:
    """JavaScript for the Earth Engine Code Editor that starts ``export`` (paste it, run, then start the task)."""
    w, s, e, n = export.bbox
    bands = ", ".join(f"'{b}'" for b in BANDS)
    folder = f"\n  folder: {json.dumps(export.folder)}," if export.folder else ""
    return f"""// dunemap: AlphaEarth Foundations annual satellite embedding, {export.name}, {export.year}
// bbox (W, S, E, N, degrees): {w:g}, {s:g}, {e:g}, {n:g}; written at {export.scale:g} m in {export.crs}
// {export.size_text()}
var region = ee.Geometry.Rectangle([{w!r}, {s!r}, {e!r}, {n!r}], 'EPSG:4326', false);
var bands = [{bands}];
var embedding = ee.ImageCollection('{COLLECTION}')
  .filterDate('{export.start_date}', '{export.end_date}')
  .filterBounds(region)
  .mosaic()
  .select(bands)
  .toFloat();
Map.centerObject(region, 9);
Map.addLayer(embedding, {{bands: ['A01', 'A16', 'A09'], min: -0.3, max: 0.3}}, 'AEF {export.year}');
Export.image.toDrive({{
  image: embedding,
  description: {json.dumps(export.description)},
  fileNamePrefix: {json.dumps(export.file_prefix)},{folder}
  region: region,
  scale: {export.scale:g},
  crs: '{export.crs}',
  fileFormat: 'GeoTIFF',
  maxPixels: {export.max_pixels:.0e}
}});
"""


def start_export(export: GeeExport, project: str | None = None) -> str:
    """Start ``export`` through earthengine-api and return the task id; needs ``ee`` installed and authenticated."""
    try:
        import ee
    except ImportError:
        raise ConfigError("earthengine-api is not installed; install it with pip install 'dunemap[gee]' "
                          "(or use `dunemap gee-script` in the Code Editor)") from None
    try:
        if project:
            ee.Initialize(project=project)
        else:
            ee.Initialize()
    except Exception as exc:  # ee raises EEException, google.auth errors and others
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigError(f"Earth Engine is not authenticated or initialised ({reason}); "
                          "run `earthengine authenticate` and pass --project YOUR_CLOUD_PROJECT") from None
    w, s, e, n = export.bbox
    region = ee.Geometry.Rectangle([w, s, e, n], "EPSG:4326", False)
    image = (ee.ImageCollection(COLLECTION)
             .filterDate(export.start_date, export.end_date)
             .filterBounds(region)
             .mosaic()
             .select(list(BANDS))
             .toFloat())
    kwargs = dict(image=image, description=export.description, fileNamePrefix=export.file_prefix, region=region,
                  scale=export.scale, crs=export.crs, fileFormat="GeoTIFF", maxPixels=export.max_pixels)
    if export.folder:
        kwargs["folder"] = export.folder
    try:
        task = ee.batch.Export.image.toDrive(**kwargs)
        task.start()
    except Exception as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigError(f"Earth Engine refused the export {export.description!r} ({reason})") from None
    return str(task.id)


def size_warning(export: GeeExport, warn_bytes: float = WARN_BYTES) -> str | None:
    """A one-line warning when ``export`` is expected to exceed ``warn_bytes``, else None."""
    if export.size_bytes <= warn_bytes:
        return None
    return (f"{export.name}: the export is about {export.size_bytes / 1e9:,.0f} GB ({export.pixels:,} pixels), above "
            f"{warn_bytes / 1e9:g} GB: check your Google Drive space, or export a smaller --bbox")
