"""The AEF COG tile index (GeoParquet): bbox and UTM helpers, reading the index, selecting tiles, GDAL paths.

The public index (``aef_index.parquet``) has one row per 8192 x 8192 COG with columns ``path``,
``year``, ``crs``, ``utm_zone``, ``wgs84_west``, ``wgs84_south``, ``wgs84_east``, ``wgs84_north``
and ``geometry``; only the first eight are read. Tiles crossing the antimeridian are not handled.
"""

from __future__ import annotations

import math
import posixpath
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from dunemap.errors import ConfigError, InputError
from dunemap.raster.zones import utm_epsg
from dunemap.regions import get_region

PUBLIC_INDEX_URL = "https://data.source.coop/tge-labs/aef/v1/annual/aef_index.parquet"
INDEX_COLUMNS = ("path", "year", "crs", "utm_zone", "wgs84_west", "wgs84_south", "wgs84_east", "wgs84_north")
FIRST_YEAR = 2017  # the first year of the annual embedding

BBox = tuple[float, float, float, float]  # west, south, east, north in degrees (WGS84)


@dataclass(frozen=True)
class AefTile:
    """One COG of the index, with the path GDAL opens."""

    path: str  # as written in the index
    gdal_path: str  # local path or /vsicurl/, /vsis3/, /vsigs/ path
    year: int
    crs: str
    utm_zone: str
    bounds: BBox  # WGS84 west, south, east, north

    @property
    def name(self) -> str:
        return posixpath.basename(self.path.rstrip("/")) or self.path


def check_bbox(bbox: tuple[float, ...] | list[float]) -> BBox:
    """Validate a WGS84 ``west south east north`` box; a bad one raises ConfigError quoting it."""
    if len(bbox) != 4:
        raise ConfigError(f"bbox {tuple(bbox)} needs four numbers: west south east north (degrees)")
    w, s, e, n = (float(v) for v in bbox)
    if not all(math.isfinite(v) for v in (w, s, e, n)) or not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
        raise ConfigError(f"bbox ({w:g}, {s:g}, {e:g}, {n:g}) is not west < east within [-180, 180] and "
                          "south < north within [-90, 90] (degrees, WGS84)")
    return w, s, e, n


def latest_year() -> int:
    """The last year the AEF annual embedding can hold: a year's layer is made from that whole year's imagery,
    so it is published after the year ends (the last complete calendar year)."""
    import datetime

    return datetime.date.today().year - 1


def check_year(year: int) -> int:
    """``year`` when the AEF annual embedding can hold it (FIRST_YEAR to the last complete year), else ConfigError."""
    last = latest_year()
    if year < FIRST_YEAR:
        raise ConfigError(f"year {year} predates the AEF annual embedding; expected {FIRST_YEAR} to {last}")
    if year > last:
        raise ConfigError(f"year {year} has no AEF annual embedding yet (a year's layer is published after it "
                          f"ends); expected {FIRST_YEAR} to {last}")
    return int(year)


def bbox_center(bbox: BBox) -> tuple[float, float]:
    w, s, e, n = bbox
    return (w + e) / 2.0, (s + n) / 2.0


def resolve_area(region: str | None, bbox: tuple[float, ...] | None) -> tuple[str, BBox, int]:
    """(name, bbox, UTM EPSG) of a region preset or of a bbox (zone of its centre); exactly one must be given."""
    if (region is None) == (bbox is None):
        raise ConfigError("give either a region preset (--region) or a bbox (--bbox W S E N), not both or neither")
    if region is not None:
        preset = get_region(region)
        return preset.name, preset.bbox, preset.epsg
    box = check_bbox(tuple(bbox))  # type: ignore[arg-type]
    name = "bbox_" + "_".join(f"{v:g}".replace("-", "m").replace(".", "p") for v in box)
    return name, box, utm_epsg(*bbox_center(box))


def gdal_path(path: str, base: str | None = None) -> str:
    """The path GDAL should open: URLs go through /vsicurl/ (range reads), s3:// and gs:// through /vsis3/ and /vsigs/.

    Relative paths are taken relative to ``base`` (the index's folder or URL folder).
    """
    if path.startswith("/vsi"):
        return path
    scheme = urllib.parse.urlsplit(path).scheme.lower()
    if scheme in ("http", "https"):
        return "/vsicurl/" + path
    if scheme == "s3":
        return "/vsis3/" + path[len("s3://"):]
    if scheme in ("gs", "gcs"):
        return "/vsigs/" + path.split("://", 1)[1]
    if scheme == "file":
        return urllib.parse.unquote(urllib.parse.urlsplit(path).path)
    if base is not None and not Path(path).is_absolute():
        if urllib.parse.urlsplit(base).scheme in ("http", "https", "s3", "gs", "gcs"):
            return gdal_path(base.rstrip("/") + "/" + path)
        return str(Path(base) / path)
    return path


def rewrite_path(path: str, rewrites: list[tuple[str, str]]) -> str:
    """Apply the first ``(old_prefix, new_prefix)`` whose prefix matches ``path``."""
    for old, new in rewrites:
        if path.startswith(old):
            return new + path[len(old):]
    return path


def parse_rewrite(text: str) -> tuple[str, str]:
    """Parse ``OLD=NEW`` (e.g. ``s3://bucket/=https://host/bucket/``) into a prefix pair."""
    old, sep, new = text.partition("=")
    if not sep or not old:
        raise ConfigError(f"path rewrite {text!r} is not OLD_PREFIX=NEW_PREFIX")
    return old, new


def _index_base(location: str) -> str:
    if urllib.parse.urlsplit(location).scheme in ("http", "https", "s3", "gs", "gcs"):
        return location.rsplit("/", 1)[0]
    return str(Path(location).resolve().parent)


def read_index(location: str | Path):
    """Read the index's tile columns from a local file or an http(s) URL into a pandas DataFrame."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    location = str(location)
    scheme = urllib.parse.urlsplit(location).scheme.lower()
    try:
        if scheme in ("http", "https"):
            with urllib.request.urlopen(location, timeout=120) as resp:  # noqa: S310 - user-chosen index URL
                source = pa.BufferReader(resp.read())
        elif scheme in ("", "file"):
            local = gdal_path(location) if scheme == "file" else location
            if not Path(local).exists():
                raise InputError(f"AEF index {location}: file not found")
            source = local
        else:
            raise InputError(f"AEF index {location}: unsupported scheme {scheme!r}; expected a local file or http(s) URL")
        parquet = pq.ParquetFile(source)
        missing = [c for c in INDEX_COLUMNS if c not in parquet.schema_arrow.names]
        if missing:
            raise InputError(f"AEF index {location}: missing column(s) {', '.join(missing)}; "
                             f"expected {', '.join(INDEX_COLUMNS)}")
        table = parquet.read(columns=list(INDEX_COLUMNS))
    except (OSError, pa.ArrowException, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"AEF index {location}: cannot read it as Parquet ({' '.join(str(exc).split())})") from None
    df = table.to_pandas()
    df.attrs["base"] = _index_base(location)
    df.attrs["location"] = location
    return df


def select_tiles(index, bbox: BBox, year: int, rewrites: list[tuple[str, str]] | None = None) -> list[AefTile]:
    """Tiles of ``year`` whose WGS84 bounds intersect ``bbox``, in index order; none found is an InputError."""
    w, s, e, n = check_bbox(bbox)
    years = index["year"].astype(int)
    hit = (
        (years == int(year))
        & (index["wgs84_west"] < e) & (index["wgs84_east"] > w)
        & (index["wgs84_south"] < n) & (index["wgs84_north"] > s)
    )
    rows = index[hit]
    if rows.empty:
        have = sorted({int(y) for y in years.unique()})
        where = index.attrs.get("location", "the index")
        raise InputError(f"no AEF tiles of year {year} intersect bbox ({w:g}, {s:g}, {e:g}, {n:g}) in {where}; "
                         f"years in the index: {', '.join(map(str, have)) or 'none'}")
    base = index.attrs.get("base")
    tiles = []
    for row in rows.itertuples(index=False):
        path = rewrite_path(str(row.path), rewrites or [])
        tiles.append(AefTile(path=str(row.path), gdal_path=gdal_path(path, base), year=int(row.year), crs=str(row.crs),
                             utm_zone=str(row.utm_zone),
                             bounds=(float(row.wgs84_west), float(row.wgs84_south), float(row.wgs84_east),
                                     float(row.wgs84_north))))
    return tiles

