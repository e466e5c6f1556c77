"""``dunemap synth``: synthetic Mars-analog dune fields, as one georeferenced scene or as a training dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from dunemap.cli.options import add, add_alias, add_no_progress, add_overwrite, default_of, fraction
from dunemap.data.splits import SPLIT_MODES
from dunemap.regions import REGIONS
from dunemap.synth.encoding import ENCODINGS


def register(subparsers: argparse._SubParsersAction) -> None:
    from dunemap.synth.dataset import write_dataset
    from dunemap.synth.scene import SceneConfig
    from dunemap.synth.writers import write_scene_files
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
    s.add_argument("--region", default=default_of(SceneConfig, "region"), choices=sorted(REGIONS),
                   help="region preset")
    s.add_argument("--size", type=int, default=default_of(SceneConfig, "size")[0], metavar="PX",
                   help="scene side in 10 m pixels")
    add(s, "seed", SceneConfig, help="random seed; the same seed gives identical files")
    s.add_argument("--out", type=Path, default=Path("."), metavar="DIR",
                   help="output folder (default: the current folder; existing scene files need --overwrite)")
    s.add_argument("--dtype", default=default_of(write_scene_files, "dtype"), choices=sorted(ENCODINGS),
                   help="embedding storage: float32 (NaN nodata) or int8 (AEF quantisation, -128 nodata)")
    s.add_argument("--bottom-up", action="store_true",
                   help="store rows south to north (positive pixel height), as AEF's public COGs do")
    s.add_argument("--nodata-holes", action="store_true", help="punch irregular nodata holes into the scene")
    add(s, "region_px", SceneConfig)
    add(s, "embedding_seed", SceneConfig)
    add_overwrite(s, "scene files already in --out")
    s.set_defaults(config_class=SceneConfig)

    d = sub.add_parser("dataset", help="a seed-layout training dataset, whole scenes held out for val/test",
                       description="Write OUT/img_dir/{train,val,test}/*.npy, OUT/ann_dir/{split}/*.png, "
                                   "OUT/manifest.csv and OUT/synth.json from scenes of each region.")
    d.add_argument("--out", required=True, type=Path, metavar="DIR", help="dataset folder to create")
    add(d, "regions", help=f"comma-separated region presets (default: all of {','.join(sorted(REGIONS))})")
    add(d, "scenes_per_region", write_dataset)
    add(d, "scene_size", write_dataset)
    add(d, "tile", write_dataset)
    add(d, "seed", write_dataset, help="seed of the scenes and of the block shuffle")
    add(d, "block_tiles", write_dataset)
    add(d, "split", write_dataset)
    d.add_argument("--split-by", default=default_of(write_dataset, "split_by"), choices=list(SPLIT_MODES),
                   help="scene: hold whole scenes out for val/test (new-scene scores) and split the rest by blocks "
                        "(in-scene scores); block: split every scene by blocks")
    d.add_argument("--nodata-holes", action="store_true", help="punch irregular nodata holes (label 255)")
    add(d, "min_valid", write_dataset)
    add(d, "region_px", write_dataset)
    add_overwrite(d, "a dataset already in --out")
    add_no_progress(d)
    add_alias(d, "--max-nodata", "--min-valid", "min_valid", type=fraction, convert=lambda f: 1.0 - f)
    d.set_defaults(config_class=write_dataset)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.synth_command == "scene":
        from dunemap.io.outputs import claim_outputs
        from dunemap.synth.scene import SceneConfig
        from dunemap.synth.writers import write_scene_files

        cfg = SceneConfig(size=(args.size, args.size), region=args.region, seed=args.seed,
                          nodata_holes=args.nodata_holes, region_px=args.region_px, embedding_seed=args.embedding_seed)
        suffixes = ("_emb.tif", "_labels.tif", "_hillshade.png", "_overlay.png")
        outs = [args.out / f"{cfg.name}{suffix}" for suffix in suffixes]
        from dunemap.raster.legend import style_paths

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
