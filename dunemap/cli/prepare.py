"""``dunemap prepare``: tile embedding GeoTIFFs and expert labels into a spatially split training dataset."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from dunemap.cli.options import add, add_alias, add_no_progress, add_overwrite, config_from_args, default_of, fraction


def register(subparsers: argparse._SubParsersAction) -> None:
    from dunemap.data.prepare import PrepareConfig
    from dunemap.data.splits import SPLIT_MODES

    p = subparsers.add_parser(
        "prepare",
        help="tile embedding rasters + labels into img_dir/ann_dir tiles split by spatial blocks",
        description="Cut embedding GeoTIFFs (float or AEF int8) and labels (polygons or a label raster on the "
                    "image grid) into north-up tiles, skip tiles with too much nodata, split train/val/test by "
                    "spatial blocks and write manifest.csv and summary.json.",
    )
    p.add_argument("--image", dest="images", action="append", required=True, type=Path, metavar="EMB.tif",
                   help="embedding GeoTIFF; repeat for several scenes or regions")
    p.add_argument("--labels", action="append", required=True, type=Path, metavar="FILE",
                   help="polygons (.gpkg/.shp/.geojson) or a label raster (.tif); once for all images or once per image")
    p.add_argument("--class-field", default=default_of(PrepareConfig, "class_field"), metavar="NAME",
                   help="vector field with class ids or names")
    p.add_argument("--layer", metavar="NAME", help="vector layer (default: the first)")
    p.add_argument("--region", dest="regions", action="append", default=[], metavar="NAME",
                   help="region recorded for each image, in --image order; repeat once per image (default: the "
                        "image's REGION metadata tag, else its file name)")
    p.add_argument("--out", required=True, type=Path, metavar="DATASET", help="dataset folder to create")
    add(p, "in_channels", PrepareConfig)
    add(p, "tile", PrepareConfig)
    p.add_argument("--stride", type=int, metavar="PX", help="step between tiles (default: --tile)")
    add(p, "split", PrepareConfig)
    add(p, "block_tiles", PrepareConfig,
        help="side of a spatial block in tiles; whole blocks go to one split (default 0: the largest of 4, 3, 2, 1 "
             "that gives every split tiles)")
    p.add_argument("--buffer", type=int, default=default_of(PrepareConfig, "buffer"), metavar="TILES",
                   help="extra gap kept free between tiles of different splits (overlaps are always removed)")
    p.add_argument("--split-by", default=default_of(PrepareConfig, "split_by"), choices=list(SPLIT_MODES),
                   help="block: deal spatial blocks of every image; scene: hold whole images out for val/test "
                        "(new-scene scores), split the others by blocks")
    add(p, "min_valid", PrepareConfig)
    add(p, "seed", PrepareConfig, help="seed of the block shuffle")
    add(p, "catalog", PrepareConfig)
    add(p, "patches", PrepareConfig)
    add_overwrite(p, "a dataset already in --out")
    add_no_progress(p)
    add_alias(p, "--block-size", "--block-tiles", "block_tiles", type=int)
    add_alias(p, "--max-nodata", "--min-valid", "min_valid", type=fraction, convert=lambda f: 1.0 - f)
    p.set_defaults(func=run, config_class=PrepareConfig)


def run(args: argparse.Namespace) -> int:
    from dunemap.data.prepare import PrepareConfig, prepare_dataset
    from dunemap.data.splits import parse_fractions

    config = config_from_args(PrepareConfig, args, split=parse_fractions(args.split))
    from dunemap.data.manifest import MANIFEST_NAME
    from dunemap.data.prepare import SUMMARY_NAME
    from dunemap.data.seed_layout import ANN_DIR, IMG_DIR
    from dunemap.io.outputs import check_outputs, locked_outputs

    with locked_outputs([args.out]):
        # prepare replaces only these; its own check refuses an existing dataset without --overwrite
        check_outputs([args.out / MANIFEST_NAME, args.out / SUMMARY_NAME], [*args.images, *args.labels, args.catalog, args.patches],
                      resume=True, folders=[args.out / IMG_DIR, args.out / ANN_DIR])
        for staging in args.out.glob(".prepare-*"):  # left by a killed run (we hold the lock: none is running)
            shutil.rmtree(staging, ignore_errors=True)
        summary = prepare_dataset(config)
    print(f"wrote {summary.total_tiles} tiles to {summary.out} "
          f"({summary.skipped_nodata} skipped for nodata, {summary.dropped_for_split} dropped between splits)")
    width = max(len(n) for n in summary.class_names)
    print(f"{'class':<{width}}  " + "  ".join(f"{s:>7}" for s in summary.tiles))
    print(f"{'tiles':<{width}}  " + "  ".join(f"{n:>7d}" for n in summary.tiles.values()))
    for k, name in enumerate(summary.class_names):
        print(f"{name:<{width}}  " + "  ".join(f"{summary.class_fraction[s][k]:>7.1%}" for s in summary.tiles))
    return 0
