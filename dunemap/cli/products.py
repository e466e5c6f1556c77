"""``dunemap stats``, ``quicklook``, ``vectorize`` and ``mosaic``: products of a finished class map or zone set."""

from __future__ import annotations

import argparse
from pathlib import Path

from dunemap.cli.options import add_maps, add_overwrite, default_of
from dunemap.errors import ConfigError


def _class_ids(value: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated class ids like 1,2,3; got {value!r}") from None


def default_product(map_path: Path, suffix: str) -> Path:
    """The default output of a product of ``map_path``: beside it, its stem + ``suffix`` (MAP.tif -> MAP_areas.csv)."""
    return map_path.with_name(map_path.stem + suffix)


def register(subparsers: argparse._SubParsersAction) -> None:
    from dunemap.accuracy.assess import error_adjusted_table
    from dunemap.products.mosaic import mosaic_maps
    from dunemap.products.quicklook import render_quicklook
    from dunemap.products.vectorize import vectorize_map

    p = subparsers.add_parser(
        "stats", help="area in km2 of each class (per zone) of a class map, to CSV and JSON",
        description="Sum the true (ellipsoidal) area of each class of a class map, over the whole map or inside "
        "each polygon of a zones file. Writes OUT (CSV) and OUT with .json.",
    )
    add_maps(p, "give one table summed over the maps, each in its own projection")
    p.add_argument("--out", type=Path, metavar="REPORT",
                   help="report to write: a name ending in .csv or .json, the other file goes beside it "
                        "(default: MAP_areas.csv beside the first map, DESERT_areas.csv beside a set's folder)")
    p.add_argument("--zones", type=Path, help="polygons (GeoPackage, shapefile, GeoJSON ...) to summarise within "
                                              "(default: the whole map)")
    p.add_argument("--zone-field", help="attribute naming each zone (default: zone_<feature index>)")
    add_overwrite(p, "existing CSV and JSON files")
    p.add_argument("--reference", type=Path, metavar="POINTS",
                   help="labelled reference points (see dunemap sample; of the set, for a set): also print each "
                        "class's error-adjusted area with its 95 %% interval beside the mapped area (default: none)")
    p.add_argument("--field", default=default_of(error_adjusted_table, "field_name"),
                   help="field of --reference with the reference class")
    p.set_defaults(func=run_stats)

    p = subparsers.add_parser(
        "quicklook", help="PNG of a class map with legend, scale bar and north arrow",
        description="Render a class map to a PNG: class colours, legend with class shares, scale bar, north "
        "arrow and, optionally, hillshading from an elevation raster.",
    )
    add_maps(p, "are drawn as one, mosaicked in an equal-area view centred on them")
    p.add_argument("--out", type=Path, metavar="PNG",
                   help="PNG to write (default: MAP.png beside the first map, DESERT.png beside a set's folder)")
    p.add_argument("--hillshade-from", type=Path, metavar="DEM",
                   help="elevation raster to shade the colours with (default: none)")
    p.add_argument("--max-size", type=int, default=default_of(render_quicklook, "max_size"), metavar="PX",
                   help="longest side of the drawn map in pixels")
    p.add_argument("--title", help="title (default: the map's file name)")
    p.add_argument("--dpi", type=int, default=default_of(render_quicklook, "dpi"), help="resolution of the PNG")
    p.add_argument("--hatch-outside", action="store_true",
                   help="hatch the area outside the area of applicability (needs MAP_applicability.tif beside MAP)")
    add_overwrite(p, "an existing PNG")
    p.set_defaults(func=run_quicklook)

    p = subparsers.add_parser(
        "vectorize", help="polygons of each class patch to a GeoPackage, Shapefile, GeoJSON, FlatGeobuf or GeoParquet",
        description="Trace every 4-connected patch of each class into a polygon with class_id, class_name and "
        "area_m2 (true area) attributes; patches under --min-area are dropped. A zone set of map --index (or "
        "several maps) gives one layer in EPSG:4326 with a zone attribute, each polygon's area measured in its "
        "zone's own projection.",
    )
    add_maps(p, "go into one layer in EPSG:4326")
    p.add_argument("--out", type=Path, required=True,
                   help="vector file to write; the extension sets the format: .gpkg (GeoPackage, with a QGIS "
                        "style), .shp (Shapefile), .geojson, .fgb (FlatGeobuf), .parquet (GeoParquet)")
    p.add_argument("--min-area", type=float, default=default_of(vectorize_map, "min_area_m2"), metavar="M2",
                   help="drop patches smaller than this (m2)")
    p.add_argument("--classes", type=_class_ids, help="only these class ids, e.g. 1,2,3 (default: all)")
    p.add_argument("--layer", default=default_of(vectorize_map, "layer"), help="layer name")
    add_overwrite(p, "the layer if the GeoPackage already has it (its other layers are kept), or a file that is "
                     "not a GeoPackage")
    p.set_defaults(func=run_vectorize)

    p = subparsers.add_parser(
        "mosaic", help="one class COG in a single CRS from a zone set or several class maps (nearest neighbour)",
        description="Reproject class maps (a zone set of map --index: its folder or catalog.json, or a list) onto "
        "one grid in --crs with nearest neighbour, classes never blended, into one class COG with the legend.",
    )
    p.add_argument("maps", type=Path, nargs="+", metavar="MAP", help="class maps, or a zone set's folder or catalog")
    p.add_argument("--out", type=Path, required=True, metavar="MOSAIC.tif", help="the class COG to write")
    p.add_argument("--crs", default=default_of(mosaic_maps, "crs"), help="CRS of the mosaic")
    p.add_argument("--resolution", type=float, default=default_of(mosaic_maps, "resolution"), metavar="UNITS",
                   help="pixel size in --crs units (default: none, the finest the maps' pixels give)")
    add_overwrite(p, "an existing mosaic")
    p.set_defaults(func=run_mosaic)


def run_mosaic(args: argparse.Namespace) -> int:
    from dunemap.io.formats import raster_driver
    from dunemap.products.mosaic import mosaic_maps

    raster_driver(args.out)  # a GeoTIFF: refuse any other extension before any work
    result = mosaic_maps(args.maps, args.out, crs=args.crs, resolution=args.resolution, overwrite=args.overwrite)
    print(f"wrote {result.path}: {result.width}x{result.height} px of {result.resolution:g} in {result.crs} from "
          f"{len(result.maps)} map(s)")
    return 0


def run_stats(args: argparse.Namespace) -> int:
    from dunemap.products.stats import map_statistics

    if args.reference and args.zones:
        raise ConfigError("--reference estimates areas over the whole map; it cannot be combined with --zones")
    if args.out is None:
        args.out = default_product(args.map[0], "_areas.csv")
    stats = map_statistics(args.map, args.out, zones=args.zones, zone_field=args.zone_field, overwrite=args.overwrite,
                           inputs=[args.reference])
    print(stats.table())
    if args.reference:
        from dunemap.accuracy.assess import error_adjusted_table

        print(error_adjusted_table(args.map, args.reference, args.field))
    print(f"wrote {stats.csv_path} and {stats.json_path}")
    return 0


def run_quicklook(args: argparse.Namespace) -> int:
    from dunemap.products.quicklook import render_quicklook

    if args.dpi < 10:
        raise ConfigError(f"--dpi {args.dpi} is too small; use at least 10")
    from dunemap.io.outputs import claim_outputs
    from dunemap.products.mapset import is_set, resolve_maps
    from dunemap.products.mosaic import quicklook_of_set

    if args.out is None:
        args.out = default_product(args.map[0], ".png")
    maps, catalog = resolve_maps(args.map)
    with claim_outputs([args.out], [*maps, catalog, args.hillshade_from], overwrite=args.overwrite):
        if is_set(maps, catalog):
            if args.hillshade_from or args.hatch_outside:
                raise ConfigError("--hillshade-from and --hatch-outside draw one map; give one MAP")
            path = quicklook_of_set(maps, args.out, max_size=args.max_size, dpi=args.dpi,
                                    **({"title": args.title} if args.title else {}))
        else:
            path = render_quicklook(maps[0], args.out, hillshade_from=args.hillshade_from, max_size=args.max_size,
                                    title=args.title, dpi=args.dpi, hatch_outside=args.hatch_outside)
    print(f"wrote {path}")
    return 0


def run_vectorize(args: argparse.Namespace) -> int:
    from dunemap.io.formats import file_set, vector_driver
    from dunemap.io.outputs import claim_outputs
    from dunemap.products.mapset import resolve_maps
    from dunemap.products.vectorize import vectorize_map

    maps, catalog = resolve_maps(args.map)
    # an existing GeoPackage gets a new layer; other formats are replaced whole (vectorize_map applies --overwrite)
    with claim_outputs([args.out], [*maps, catalog], resume=True, companions=file_set(args.out)[:-1]):
        vector_driver(args.out)  # refuse an unknown extension before any work
        result = vectorize_map(args.map, args.out, min_area_m2=args.min_area, classes=args.classes, layer=args.layer,
                               overwrite=args.overwrite)
    print(f"wrote {result.polygons} polygons to {result.path} ({result.dropped_small} below {args.min_area:g} m2 dropped)")
    return 0
