"""``dunemap gee-script``, ``fetch-gee`` and ``fetch-aef``: get AEF embeddings for a region preset or a bbox."""

from __future__ import annotations

import argparse
from pathlib import Path

from dunemap.cli.options import add_no_progress, add_overwrite, default_of


def _add_area(p: argparse.ArgumentParser, region: bool = True) -> None:
    """The shared area options: a region preset or a WGS84 bbox, and the year."""
    from dunemap.regions import REGIONS

    area = p.add_mutually_exclusive_group(required=True)
    if region:
        area.add_argument("--region", choices=sorted(REGIONS), help="a region preset (its bbox and UTM zone)")
    area.add_argument("--bbox", nargs=4, type=float, metavar=("W", "S", "E", "N"),
                      help="WGS84 bounding box in degrees")
    p.add_argument("--year", type=int, required=True,
                   help="embedding year: 2017 to the last complete year (a year's layer is published after it ends)")


def _add_warn(p: argparse.ArgumentParser) -> None:
    from dunemap.acquire.gee import WARN_BYTES

    p.add_argument("--warn-gb", type=float, default=WARN_BYTES / 1e9, metavar="GB",
                   help="warn when the export is expected to be larger than this")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("gee-script", help="print an Earth Engine Code Editor script exporting AEF embeddings",
                              description="Print JavaScript for the Earth Engine Code Editor that exports the AEF "
                                          "annual embedding (A00..A63, 10 m, UTM) of an area to Google Drive.")
    _add_area(p)
    p.add_argument("--crs", default=None, help="output CRS, e.g. EPSG:32733 (default: the area's UTM zone)")
    p.add_argument("--out-prefix", default=None, help="Drive file prefix and task name (default: aef_AREA_YEAR)")
    p.add_argument("--folder", default=None, help="Google Drive folder (default: Drive root)")
    _add_warn(p)
    p.set_defaults(func=run_gee_script)

    p = subparsers.add_parser("fetch-gee", help="start the same AEF export through earthengine-api",
                              description="Start an Earth Engine export of the AEF annual embedding of an area to "
                                          "Google Drive (needs earthengine-api, authenticated).")
    _add_area(p)
    p.add_argument("--crs", default=None, help="output CRS, e.g. EPSG:32733 (default: the area's UTM zone)")
    p.add_argument("--out-prefix", default=None, help="Drive file prefix and task name (default: aef_AREA_YEAR)")
    p.add_argument("--folder", default=None, help="Google Drive folder (default: Drive root)")
    p.add_argument("--project", default=None,
                   help="Google Cloud project for ee.Initialize (default: earthengine-api's)")
    _add_warn(p)
    p.set_defaults(func=run_fetch_gee)

    from dunemap.acquire.aef_cog import OUTPUT_DTYPES, RESAMPLING, FetchConfig
    from dunemap.acquire.index import PUBLIC_INDEX_URL

    p = subparsers.add_parser("fetch-aef",
                              help="read AEF COG windows over a bbox into one GeoTIFF (the archive's int8, or float32)",
                              description="Read only the needed windows of the public AEF COGs (int8, bottom-up) "
                                          "listed in an index and mosaic them across tiles and UTM zones into one "
                                          "GeoTIFF: the archive's int8 codes (nodata -128) unless --dtype float32 "
                                          "asks for de-quantised vectors (nodata NaN).")
    _add_area(p)
    p.add_argument("--index", required=True, metavar="aef_index.parquet",
                   help=f"tile index: local file or URL (the public one is {PUBLIC_INDEX_URL})")
    p.add_argument("--out", required=True, type=Path, metavar="EMB.tif", help="output GeoTIFF")
    p.add_argument("--crs", default=None, help="output CRS (default: UTM zone of the bbox centre)")
    p.add_argument("--resolution", type=float, default=default_of(FetchConfig, "resolution"), metavar="M",
                   help="output pixel size")
    p.add_argument("--resampling", choices=sorted(RESAMPLING), default=default_of(FetchConfig, "resampling"),
                   help="for tiles off the output grid, e.g. other UTM zones")
    p.add_argument("--dtype", choices=sorted(OUTPUT_DTYPES), default=default_of(FetchConfig, "dtype"),
                   help="int8: the archive's own codes, -128 nodata (64 bytes per pixel, the archive's bytes; every "
                        "dunemap command reads them), nearest resampling only; float32: de-quantised embeddings, NaN "
                        "nodata (256 bytes per pixel)")
    add_overwrite(p, "an existing EMB.tif")
    p.add_argument("--rewrite", action="append", default=[], metavar="OLD=NEW",
                   help="replace a path prefix of the index, e.g. s3://bucket/=https://host/bucket/ (repeatable; "
                        "default: none)")
    add_no_progress(p)
    p.set_defaults(func=run_fetch_aef)


def _warn_size(export, warn_gb: float) -> None:
    """The expected export size on stderr (the script itself goes to stdout), as a warning above ``warn_gb``."""
    import logging

    from dunemap.acquire.gee import size_warning

    warning = size_warning(export, warn_gb * 1e9)
    log = logging.getLogger("dunemap.acquire")
    if warning:
        log.warning(warning)
    else:
        log.info(export.size_text())


def run_gee_script(args: argparse.Namespace) -> int:
    from dunemap.acquire.gee import gee_script, plan_export

    export = plan_export(args.year, region=args.region, bbox=args.bbox, crs=args.crs, out_prefix=args.out_prefix,
                         folder=args.folder)
    print(gee_script(export), end="")  # the script's header comment states the expected size too
    _warn_size(export, args.warn_gb)
    return 0


def run_fetch_gee(args: argparse.Namespace) -> int:
    from dunemap.acquire.gee import plan_export, start_export

    export = plan_export(args.year, region=args.region, bbox=args.bbox, crs=args.crs, out_prefix=args.out_prefix,
                         folder=args.folder)
    _warn_size(export, args.warn_gb)
    task_id = start_export(export, project=args.project)
    print(f"started Earth Engine task {task_id}: {export.file_prefix}*.tif to Google Drive"
          f"{' folder ' + export.folder if export.folder else ''} ({export.crs}, {export.scale:g} m)")
    return 0


def run_fetch_aef(args: argparse.Namespace) -> int:
    from dunemap.acquire.aef_cog import FetchConfig, fetch_aef
    from dunemap.acquire.index import parse_rewrite, resolve_area
    from dunemap.io.formats import raster_driver
    from dunemap.io.outputs import claim_outputs

    _, bbox, epsg = resolve_area(args.region, args.bbox)
    crs = args.crs or (f"EPSG:{epsg}" if args.region else None)  # a preset keeps its own UTM zone
    index = None if "://" in args.index else args.index
    with claim_outputs([args.out], [index], overwrite=args.overwrite):
        raster_driver(args.out)  # a GeoTIFF: refuse any other extension before any work
        result = fetch_aef(FetchConfig(bbox=bbox, year=args.year, index=args.index, out=args.out, crs=crs,
                                       resolution=args.resolution, resampling=args.resampling,
                                       rewrites=[parse_rewrite(r) for r in args.rewrite], dtype=args.dtype))
    print(f"wrote {result.out}: {args.dtype} {result.width}x{result.height} px, {result.crs}, from "
          f"{len(result.tiles)} tile(s), {result.valid_fraction:.1%} with data "
          f"(nodata = {'NaN' if args.dtype == 'float32' else '-128'})")
    return 0
