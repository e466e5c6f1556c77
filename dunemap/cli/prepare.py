"""``dunemap prepare``: tile embedding GeoTIFFs and expert labels into a spatially split training dataset."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
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
    p.add_argument("--class-field", default="class", metavar="NAME",
                   help="vector field with class ids or names (default: class)")
    p.add_argument("--layer", default=None, metavar="NAME", help="vector layer (default: the first)")
    p.add_argument("--region", dest="regions", action="append", default=[], metavar="NAME",
                   help="region recorded for each image, in --image order (default: the file stem)")
    p.add_argument("--out", required=True, type=Path, metavar="DATASET", help="dataset folder to create")
    p.add_argument("--tile", type=int, default=512, metavar="PX", help="tile side in pixels (default: 512)")
    p.add_argument("--stride", type=int, default=None, metavar="PX", help="step between tiles (default: --tile)")
    p.add_argument("--split", default="0.7,0.15,0.15", metavar="TRAIN,VAL,TEST",
                   help="fractions of tiles per split (default: 0.7,0.15,0.15)")
    p.add_argument("--block-size", type=int, default=4, metavar="TILES",
                   help="side of a spatial block in tile steps; whole blocks go to one split (default: 4)")
    p.add_argument("--buffer", type=int, default=0, metavar="TILES",
                   help="extra gap kept free between tiles of different splits (default: 0; overlaps always removed)")
    p.add_argument("--split-by", default="block", choices=list(SPLIT_MODES),
                   help="block: deal spatial blocks of every image; scene: hold whole images out for val/test "
                        "(new-scene scores), split the others by blocks (default: block)")
    p.add_argument("--max-nodata", type=float, default=0.5, metavar="FRAC",
                   help="skip tiles with more nodata/unlabelled pixels than this fraction (default: 0.5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the block shuffle (default: 0)")
    p.add_argument("--catalog", type=Path, default=None, metavar="FILE",
                   help="class catalog (.yaml/.toml; default: the packaged 10 dune classes)")
    p.add_argument("--overwrite", action="store_true", help="replace a dataset already in --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dunemap.data.prepare import PrepareConfig, prepare_dataset
    from dunemap.data.splits import parse_fractions

    config = PrepareConfig(
        images=args.images, labels=args.labels, out=args.out, class_field=args.class_field, layer=args.layer,
        regions=args.regions, tile=args.tile, stride=args.stride, split=parse_fractions(args.split),
        block_size=args.block_size, buffer=args.buffer, split_by=args.split_by, max_nodata=args.max_nodata, seed=args.seed,
        catalog=args.catalog, overwrite=args.overwrite,
    )
    from dunemap.data.manifest import MANIFEST_NAME
    from dunemap.data.prepare import SUMMARY_NAME
    from dunemap.data.seed_layout import ANN_DIR, IMG_DIR
    from dunemap.io.outputs import check_outputs, locked_outputs

    with locked_outputs([args.out]):
        # prepare replaces only these; its own check refuses an existing dataset without --overwrite
        check_outputs([args.out / MANIFEST_NAME, args.out / SUMMARY_NAME], [*args.images, *args.labels, args.catalog],
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
