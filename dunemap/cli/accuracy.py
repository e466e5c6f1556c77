"""``dunemap sample`` and ``dunemap accuracy``: reference points for a class map (or a zone set), and its accuracy and
area with 95 % intervals."""

from __future__ import annotations

import argparse
from pathlib import Path

from dunemap.cli.options import add, add_maps, add_overwrite, default_of


def _per_class(value: str) -> dict[str, int]:
    table = {}
    for item in value.split(","):
        key, sep, count = item.partition("=")
        if not sep or not count.strip().isdigit():
            raise argparse.ArgumentTypeError(f"expected CLASS=N pairs like 0=50,barchan=80; got {item!r}")
        table[key.strip()] = int(count)
    return table


def register(subparsers: argparse._SubParsersAction) -> None:
    from dunemap.accuracy.assess import accuracy_report
    from dunemap.accuracy.sampling import sample_map

    p = subparsers.add_parser(
        "sample", help="stratified random reference points of a class map, to label in a GIS",
        description="Draw a stratified random sample of pixel centres of a class map (strata = map classes): at "
        "least --min-per-class points per class, the rest proportional to the classes' true areas; --target-se "
        "plans the total (Olofsson et al. 2014, eq. 13). Writes the points blind, for labelling without seeing the "
        "map: in random order, with point_id and an empty ref_class only (GeoPackage, Shapefile, ... by the "
        "extension of --out; a GeoPackage edits ref_class with a drop-down of the class labels). dunemap accuracy "
        "reads each point's map class from the map. A zone set of map --index (its folder or catalog.json) or "
        "several maps are sampled in one draw: the strata are the classes summed over the maps, and the points "
        "are written in EPSG:4326 (longitude, latitude) with the zone of the map each was drawn from.",
    )
    add_maps(p, "are sampled as one, points in EPSG:4326")
    p.add_argument("--n", type=int, default=default_of(sample_map, "n"),
                   help="total number of points (0: give --per-class or --target-se)")
    p.add_argument("--min-per-class", type=int, default=default_of(sample_map, "min_per_class"), metavar="M",
                   help="at least M points per class (accuracy needs 2 per class; Olofsson et al. 2014 advise 50 "
                        "to 100 for rare classes)")
    p.add_argument("--per-class", type=_per_class, metavar="TABLE",
                   help="explicit allocation instead of --n: comma-separated CLASS=N pairs by id or name, e.g. "
                        "0=50,crescentic=80 (default: none, use --n)")
    p.add_argument("--target-se", type=float, default=default_of(sample_map, "target_se"), metavar="SE",
                   help="plan the total for this standard error of overall accuracy, e.g. 0.01 (0: use --n)")
    p.add_argument("--expected-users", type=float, default=default_of(sample_map, "expected_users"), metavar="U",
                   help="user's accuracy expected of every class when planning with --target-se")
    add(p, "seed", sample_map, help="random seed; the same seed draws the same points")
    p.add_argument("--out", type=Path, required=True,
                   help="points to write; the extension sets the format: .gpkg, .shp, .geojson, .fgb, .parquet")
    add_overwrite(p, "an existing --out")
    p.set_defaults(func=run_sample)

    p = subparsers.add_parser(
        "accuracy", help="accuracy and error-adjusted class areas with 95 %% intervals from labelled points",
        description="Stratified estimation (Olofsson et al. 2014) of overall, user's and producer's accuracy and "
        "of each class's area, each with a 95 % confidence interval, from reference points labelled by an expert. "
        "Each point's map class is read from MAP. Points drawn by the classes of another map (an earlier version, "
        "say) give --strata that map (Stehman 2014). Over a zone set (or several maps) each point's map class is "
        "read from the map whose zone owns its ground, and the class areas are summed over the maps, each measured "
        "in its own projection. Writes the report OUT names (.json or .csv) and its twin beside it.",
    )
    add_maps(p, "are assessed as one (the points of sample over that set)")
    p.add_argument("--reference", type=Path, required=True, metavar="POINTS", help="labelled points (e.g. from sample)")
    p.add_argument("--field", default=default_of(accuracy_report, "field_name"),
                   help="field holding each point's reference class id or name")
    p.add_argument("--strata", type=Path, default=default_of(accuracy_report, "strata"), metavar="CLASS_MAP",
                   help="the class map (or a zone set's folder or catalog.json) whose classes were the strata of the "
                        "sample, when they are not MAP's (Stehman 2014 estimator); default: MAP's classes (Olofsson "
                        "et al. 2014)")
    p.add_argument("--out", type=Path, required=True, help="report to write: a name ending in .json or .csv; the other file goes beside it")
    add_overwrite(p, "an existing --out")
    p.set_defaults(func=run_accuracy)


def run_sample(args: argparse.Namespace) -> int:
    from dunemap.accuracy.sampling import sample_map
    from dunemap.errors import ConfigError

    given = [flag for flag, on in (("--n", args.n > 0), ("--per-class", bool(args.per_class)),
                                   ("--target-se", args.target_se > 0)) if on]
    if len(given) != 1:
        raise ConfigError("give one of --n N (total points), --per-class TABLE or --target-se SE"
                          + (f"; got {' and '.join(given)}" if given else ""))
    sample = sample_map(args.map, args.out, n=args.n, min_per_class=args.min_per_class, seed=args.seed,
                        per_class=args.per_class, target_se=args.target_se, expected_users=args.expected_users,
                        overwrite=args.overwrite)
    print(sample.summary())
    print(f"wrote {args.out}")
    return 0


def run_accuracy(args: argparse.Namespace) -> int:
    from dunemap.accuracy.assess import accuracy_report

    result, json_path, csv_path = accuracy_report(args.map, args.reference, args.out, args.field, args.overwrite,
                                                  args.strata)
    print(result.table())
    print(f"wrote {json_path} and {csv_path}")
    return 0
