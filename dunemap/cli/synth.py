"""``dunemap synth``: synthetic Mars-analog dune fields, as one georeferenced scene or as a training dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from dunemap.cli.options import add_no_progress, add_overwrite, csv_list
from dunemap.data.splits import SPLIT_MODES
from dunemap.regions import REGIONS
from dunemap.synth.encoding import ENCODINGS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "synth",
        help="generate synthetic dune-field embeddings and labels (a demo scene or a training dataset)",
        description="Synthesise Mars-analog dune fields: ten dune classes drawn as height fields with their real "
                    "geometry, turned into 64-band unit-length AEF-like embeddings by a fixed model.",
    )
    sub = p.add_subparsers(dest="synth_command", required=True, metavar="WHAT")

    s = sub.add_parser("scene", help="one georeferenced scene: embedding + label GeoTIFFs and hillshade PNGs",
                       description="Write OUT/<region>_<seed>_emb.tif (64 bands), _labels.tif (uint8, 255 = nodata), "
                                   "_hillshade.png and _overlay.png (hillshade tinted by class).")
    s.add_argument("--region", default="namib", choices=sorted(REGIONS), help="region preset (default: namib)")
    s.add_argument("--size", type=int, default=1024, metavar="PX", help="scene side in 10 m pixels (default: 1024)")
    s.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives identical files (default: 0)")
    s.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    s.add_argument("--dtype", default="float32", choices=sorted(ENCODINGS),
                   help="embedding storage: float32 (NaN nodata) or int8 (AEF quantisation, -128 nodata)")
    s.add_argument("--bottom-up", action="store_true",
                   help="store rows south to north (positive pixel height), as AEF's public COGs do")
    s.add_argument("--nodata-holes", action="store_true", help="punch irregular nodata holes into the scene")
    s.add_argument("--region-px", type=float, default=320.0, metavar="PX",
                   help="typical width of one landform region in pixels (default: 320)")
    add_overwrite(s, "scene files already in --out")

    d = sub.add_parser("dataset", help="a seed-layout training dataset, whole scenes held out for val/test",
                       description="Write OUT/img_dir/{train,val,test}/*.npy, OUT/ann_dir/{split}/*.png, "
                                   "OUT/manifest.csv and OUT/synth.json from scenes of each region.")
    d.add_argument("--out", required=True, type=Path, metavar="DIR", help="dataset folder to create")
    d.add_argument("--regions", type=csv_list, default=sorted(REGIONS), metavar="A,B,...",
                   help=f"comma-separated region presets (default: all of {','.join(sorted(REGIONS))})")
    d.add_argument("--scenes-per-region", type=int, default=2, metavar="N", help="scenes per region (default: 2)")
    d.add_argument("--scene-size", type=int, default=512, metavar="PX", help="scene side in pixels (default: 512)")
    d.add_argument("--tile", type=int, default=128, metavar="PX", help="tile side in pixels (default: 128)")
    d.add_argument("--seed", type=int, default=0, help="seed of the scenes and of the block shuffle (default: 0)")
    d.add_argument("--block-tiles", type=int, default=2, metavar="TILES",
                   help="side of a spatial block in tiles; whole blocks go to one split (default: 2)")
    d.add_argument("--split", default="0.7,0.15,0.15", metavar="TRAIN,VAL,TEST",
                   help="fractions of tiles per split (default: 0.7,0.15,0.15)")
    d.add_argument("--split-by", default="scene", choices=list(SPLIT_MODES),
                   help="scene: hold whole scenes out for val/test (new-scene scores) and split the rest by blocks "
                        "(in-scene scores); block: split every scene by blocks (default: scene)")
    d.add_argument("--nodata-holes", action="store_true", help="punch irregular nodata holes (label 255)")
    d.add_argument("--min-valid", type=float, default=0.5, metavar="FRAC",
                   help="skip tiles with fewer valid pixels than this fraction (default: 0.5)")
    d.add_argument("--region-px", type=float, default=320.0, metavar="PX",
                   help="typical width of one landform region in pixels (default: 320)")
    add_overwrite(d, "a dataset already in --out")
    add_no_progress(d)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.synth_command == "scene":
        from dunemap.synth.scene import SceneConfig
        from dunemap.synth.writers import write_scene_files

        from dunemap.io.outputs import claim_outputs

        cfg = SceneConfig(size=(args.size, args.size), region=args.region, seed=args.seed,
                          nodata_holes=args.nodata_holes, region_px=args.region_px)
        stem = f"{args.region}_{args.seed}"
        outs = [args.out / f"{stem}{suffix}" for suffix in ("_emb.tif", "_labels.tif", "_hillshade.png", "_overlay.png")]
        from dunemap.mapping.legend import style_paths

        outs += style_paths(outs[1]).values()  # the labels' legend companions
        with claim_outputs(outs, overwrite=args.overwrite):
            files = write_scene_files(cfg, args.out, dtype=args.dtype, bottom_up=args.bottom_up)
        for path in files.paths():
            print(f"wrote {path}")
        return 0

    from dunemap.io.outputs import locked_outputs
    from dunemap.synth.dataset import read_summary, write_dataset

    with locked_outputs([args.out]):
        root = _write_dataset(args, write_dataset)
    tiles = read_summary(root)["tiles"]
    print(f"wrote {sum(tiles.values())} tiles to {root} (" + ", ".join(f"{s} {n}" for s, n in tiles.items()) + ")")
    for name in ("img_dir", "ann_dir", "manifest.csv", "synth.json"):
        print(f"wrote {root / name}")
    return 0


def _write_dataset(args: argparse.Namespace, write_dataset) -> object:
    return write_dataset(
        args.out, regions=args.regions, scenes_per_region=args.scenes_per_region, scene_size=args.scene_size,
        tile=args.tile, seed=args.seed, block_tiles=args.block_tiles, split=args.split, split_by=args.split_by,
        nodata_holes=args.nodata_holes, min_valid=args.min_valid, region_px=args.region_px,
        overwrite=args.overwrite, progress=args.progress,
    )
