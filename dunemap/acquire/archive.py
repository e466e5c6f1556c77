"""Map a desert straight from the AEF archive: one map per UTM zone, planned from the tile index, read in place.

``dunemap map --index aef_index.parquet --bbox W S E N --year Y --out DESERT/`` selects the year's
tiles that meet the box, groups them by UTM zone and maps each zone in its own CRS (embeddings are
never reprojected) into ``DESERT/utm<zone>.tif`` with the usual companions. Tiles are read as int8
windows, local files directly and URLs through GDAL range reads (``/vsicurl/``), with no converted
copy. Each ground pixel belongs to one zone (:mod:`dunemap.raster.zones`). ``DESERT/catalog.json``
(and ``catalog.csv``) lists the set; products read the set through it. A killed run resumes each
zone's map from its journal; a zone whose tile stays unreadable is left unfinished (and resumable),
the others are mapped, and the run fails naming the tile unless ``allowed_tile_failures`` allows it.
Running the same command again keeps the zone maps an unfinished run finished and resumes the rest.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dunemap.acquire.index import AefTile, check_year, read_index, resolve_area, select_tiles
from dunemap.errors import ConfigError, InputError, RasterIOError
from dunemap.io.outputs import claim_outputs
from dunemap.io.reports import report_paths, write_report
from dunemap.mapping.batch import executor_for, run_jobs
from dunemap.mapping.config import ClusterConfig, MapConfig
from dunemap.mapping.engine import MapResult
from dunemap.mapping.jobs import MapJob
from dunemap.mapping.writer import partial_dir
from dunemap.products.mapset import CATALOG_KIND, CATALOG_NAME
from dunemap.raster.zones import ZoneView, utm_zone_name
from dunemap.runtime import ModelSpec

log = logging.getLogger(__name__)

CATALOG_COLUMNS = ("zone", "epsg", "map", "tiles", "status", "error")
OWNERSHIP_RULE = ("each pixel belongs to the UTM zone whose central meridian is nearest to its centre (north or "
                  "south by its latitude) and inside the bbox; other zones' ground is nodata in a zone's map")


@dataclass
class ArchiveConfig:
    """Options of :func:`map_archive`: which part of the archive to map, and into which folder."""

    index: str = ""  # aef_index.parquet: local path or http(s) URL
    year: int = 0  # embedding year
    out: Path = Path("desert")  # output folder: one map per UTM zone plus catalog.json / catalog.csv
    bbox: tuple[float, float, float, float] | None = None  # WGS84 west, south, east, north (or give region)
    region: str | None = None  # a region preset instead of bbox
    rewrites: list[tuple[str, str]] = field(default_factory=list)  # (old, new) path prefixes applied to the index
    context: int = 256  # pixels of embeddings read around a zone's own ground, as the model's context there
    allowed_tile_failures: int = 0  # unreadable tiles the run may leave behind (their zones unfinished) and succeed

    def validate(self) -> None:
        if not self.index:
            raise ConfigError("give the AEF tile index (--index aef_index.parquet)")
        if self.context < 0:
            raise ConfigError(f"context {self.context} must be 0 or more pixels")
        if self.allowed_tile_failures < 0:
            raise ConfigError(f"--allowed-tile-failures {self.allowed_tile_failures} must be 0 or more")


@dataclass(frozen=True)
class ZonePlan:
    """One zone's map: its tiles (in index order), the view it maps and its output path."""

    zone: str  # e.g. 33S
    epsg: int
    tiles: tuple[AefTile, ...]
    view: ZoneView
    out: Path

    def job(self) -> MapJob:
        return MapJob(tuple(t.gdal_path for t in self.tiles), self.out, self.view)


@dataclass
class ArchiveResult:
    """What :func:`map_archive` wrote: the zone maps, the zones left unfinished and the catalog."""

    maps: list[tuple[ZonePlan, MapResult | None]]  # None: kept from an earlier, unfinished run of the set
    failed: list[tuple[ZonePlan, str]]  # zone and the one-line error naming its tile
    catalog: Path | None  # None when the set is unfinished
    seconds: float

    def summary(self) -> str:
        lines = [m.summary() if m is not None else f"kept {z.out} (mapped by an earlier run)" for z, m in self.maps]
        lines += [f"zone {z.zone} unfinished (run again to resume): {err}" for z, err in self.failed]
        if self.catalog is not None:
            lines.append(f"wrote {self.catalog} ({len(self.maps)} zone map(s), {self.seconds:.1f} s)")
        return "\n".join(lines)


def zone_epsg(tile: AefTile) -> int:
    """The EPSG code of a tile's UTM zone, from the index's ``crs`` column ("EPSG:32733")."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        epsg = CRS.from_user_input(tile.crs).to_epsg()
    except CRSError:
        epsg = None
    if epsg is None:
        raise InputError(f"{tile.path}: index crs {tile.crs!r} is not an EPSG code; expected e.g. EPSG:32733")
    utm_zone_name(epsg)  # refuses a non-UTM code in one line
    return epsg


def owned_box(epsg: int, bbox: tuple[float, float, float, float]) -> tuple[float, float, float, float] | None:
    """The part of ``bbox`` (WGS84) whose ground the zone ``epsg`` owns, as a WGS84 box, or None."""
    zone = epsg % 100
    west, east = -180.0 + 6.0 * (zone - 1), -180.0 + 6.0 * zone
    south, north = (0.0, 90.0) if epsg < 32700 else (-90.0, 0.0)
    w, s, e, n = max(bbox[0], west), max(bbox[1], south), min(bbox[2], east), min(bbox[3], north)
    return (w, s, e, n) if w < e and s < n else None


def plan_zones(config: ArchiveConfig) -> list[ZonePlan]:
    """The zone maps of ``config``: the year's tiles meeting the box, grouped by UTM zone (first seen first)."""
    from rasterio.warp import transform_bounds

    config.validate()
    _, bbox, _ = resolve_area(config.region, config.bbox)
    year = check_year(config.year)
    tiles = select_tiles(read_index(config.index), bbox, year, config.rewrites)
    by_zone: dict[int, list[AefTile]] = {}
    for tile in tiles:
        by_zone.setdefault(zone_epsg(tile), []).append(tile)
    plans = []
    for epsg, zone_tiles in by_zone.items():
        own = owned_box(epsg, bbox)
        zone = utm_zone_name(epsg)
        if own is None:
            log.info("zone %s: its %d tile(s) meet the bbox only on ground another zone owns; not mapped",
                     zone, len(zone_tiles))
            continue
        bounds = tuple(transform_bounds("EPSG:4326", f"EPSG:{epsg}", *own, densify_pts=21))
        view = ZoneView(epsg, bbox, bounds, config.context)  # type: ignore[arg-type]
        plans.append(ZonePlan(zone, epsg, tuple(zone_tiles), view, Path(config.out) / f"utm{zone}.tif"))
    if not plans:
        raise InputError(f"no AEF tiles of year {year} cover ground of their own UTM zone inside bbox {bbox}")
    return plans


def map_archive(config: ArchiveConfig, model: ModelSpec | str | os.PathLike, map_config: MapConfig | None = None,
                cluster: ClusterConfig | None = None, **options: Any) -> ArchiveResult:
    """Map ``config``'s part of the AEF archive, one map per UTM zone, and write the set's catalog.

    Zones are mapped one after another by one executor (on the cluster ``cluster`` describes, if any): the
    model is loaded once and ``auto`` measures the backends on the first zone mapped, the later zones reuse
    its choice (a zone resuming an interrupted map keeps its journal's backend). A zone
    whose map fails on an unreadable tile is reported and the next zone is mapped; the catalog is
    written when every zone is mapped or the failures are within ``config.allowed_tile_failures``,
    otherwise an :class:`InputError` names the tiles (the unfinished maps resume on the next run).
    """
    t0 = time.perf_counter()
    map_config = map_config or MapConfig()
    plans = plan_zones(config)
    json_path, csv_path = report_paths(Path(config.out) / CATALOG_NAME)
    index = None if "://" in config.index else config.index
    with (claim_outputs([json_path, csv_path], [index], overwrite=map_config.overwrite),
          executor_for(model, cluster, **options) as executor):  # one model, one auto backend choice for all zones
        maps: list[tuple[ZonePlan, MapResult | None]] = []
        failed: list[tuple[ZonePlan, str]] = []
        for plan in plans:
            if finished(plan.out) and not map_config.overwrite:
                log.info("zone %s: %s was mapped by an earlier run of this set; kept", plan.zone, plan.out)
                maps.append((plan, None))
                continue
            log.info("zone %s: %d tile(s) -> %s", plan.zone, len(plan.tiles), plan.out)
            try:
                batch = run_jobs([plan.job()], executor, map_config)
            except RasterIOError as exc:  # a tile unreadable after the retries; other errors stop the run
                log.warning("zone %s not finished: %s", plan.zone, exc)
                failed.append((plan, str(exc)))
                continue
            maps.append((plan, batch.maps[0]))
        if len(failed) > config.allowed_tile_failures:
            names = "; ".join(err for _, err in failed)
            raise InputError(f"{len(failed)} zone map(s) unfinished (allowed {config.allowed_tile_failures}; run again "
                             f"to resume them): {names}")
        record, rows = catalog_record(config, maps, failed)
        write_report(json_path, record, CATALOG_COLUMNS, rows)
    return ArchiveResult(maps, failed, json_path, time.perf_counter() - t0)


def finished(out: Path) -> bool:
    """Whether a zone's map is finished: the class map is there and its work folder is gone."""
    return out.exists() and not partial_dir(out).exists()


def catalog_record(config: ArchiveConfig, maps: list[tuple[ZonePlan, MapResult | None]],
                   failed: list[tuple[ZonePlan, str]]) -> tuple[dict, list[dict]]:
    """The catalog's JSON record and CSV rows: one per zone, map paths relative to the catalog; the JSON also
    names the backend each zone mapped in this run ran with (:attr:`MapResult.backend`)."""
    def row(p: ZonePlan, status: str, error: str) -> dict:
        return {"zone": p.zone, "epsg": p.epsg, "map": p.out.name, "tiles": len(p.tiles), "status": status,
                "error": error}

    rows = [row(p, "mapped", "") for p, _ in maps] + [row(p, "unfinished", err) for p, err in failed]
    record = {
        "kind": CATALOG_KIND,
        "index": config.index,
        "year": config.year,
        "bbox": list(next(p for p, _ in [*maps, *failed]).view.bbox),
        "ownership": OWNERSHIP_RULE,
        "maps": [{**r, "tile_paths": [t.path for t in p.tiles],
                  **({"backend": m.backend} if m is not None else {})}
                 for r, p, m in zip(rows, [p for p, _ in maps] + [p for p, _ in failed],
                                    [m for _, m in maps] + [None] * len(failed))],
    }
    return record, rows

