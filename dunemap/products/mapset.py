"""A set of class maps read as one: the zone maps of ``dunemap map --index`` (their folder or catalog) or a list.

A zone set's maps are disjoint by construction (each ground pixel belongs to one UTM zone, nodata in
the others' maps, :mod:`dunemap.raster.zones`), so a product adds them up map by map, each measured
in its own projection, and counts no pixel twice. Maps listed by hand are taken as given: they must
not overlap. A product of a set that holds coordinates (sample points, polygons) writes them in one
CRS, :data:`SET_CRS`, with the zone of the map each came from (:func:`zone_label`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from dunemap.errors import InputError
from dunemap.raster.zones import is_utm, utm_zone_name

CATALOG_NAME = "catalog.json"  # a zone set's catalog, in its folder (catalog.csv beside it)
CATALOG_KIND = "dunemap zone set"
SET_CRS = "EPSG:4326"  # the one CRS of a set's points and polygons: WGS84 longitude, latitude, whatever the zones


def read_catalog(path: str | os.PathLike) -> list[Path]:
    """The finished class maps a zone set's catalog lists (paths beside the catalog), in its order."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read it as a zone set catalog ({exc})") from None
    if not isinstance(record, dict) or record.get("kind") != CATALOG_KIND:
        raise InputError(f"{path}: not a dunemap zone set catalog (expected kind {CATALOG_KIND!r})")
    maps = [path.parent / m["map"] for m in record.get("maps", []) if m.get("status") == "mapped"]
    for m in maps:
        if not m.is_file():
            raise InputError(f"{path}: lists {m.name}, which is not there")
    if not maps:
        raise InputError(f"{path}: lists no finished map")
    return maps


def resolve_maps(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> tuple[list[Path], Path | None]:
    """The class maps a product reads, and the zone set's catalog if one was named.

    Each entry is a class map, a zone set's ``catalog.json`` or the folder holding it; repeats are dropped.
    """
    entries = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not entries:
        raise InputError("no class map given")
    maps: list[Path] = []
    catalog = None
    for entry in map(Path, entries):
        if entry.is_dir():
            if not (entry / CATALOG_NAME).is_file():
                raise InputError(f"{entry}: is a folder without {CATALOG_NAME}; give class maps, a zone set's "
                                 "folder or its catalog")
            entry = entry / CATALOG_NAME
        if entry.suffix.lower() == ".json":
            catalog = catalog or entry
            found = read_catalog(entry)
        else:
            found = [entry]
        maps += [m for m in found if m.resolve() not in {p.resolve() for p in maps}]
    return maps, catalog


def is_set(maps: Sequence[Path], catalog: Path | None) -> bool:
    """Whether a product is made of a set rather than of one map."""
    return catalog is not None or len(maps) > 1


def zone_label(path: Path, epsg: int | None) -> str:
    """The zone a map of a set covers, for the ``zone`` attribute of a set's products: its UTM zone (``33S``)
    when its CRS (``epsg``) is one, otherwise the map's file name without its extension."""
    return utm_zone_name(epsg) if is_utm(epsg) else Path(path).stem
