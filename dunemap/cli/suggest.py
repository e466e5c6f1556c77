"""``dunemap suggest``: square patches to label on new ground, ranked by what a label there would teach."""

from __future__ import annotations

import argparse
from pathlib import Path

from dunemap.cli.options import add, add_no_progress, add_precision_device, config_from_args, model_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    from dunemap.adapt.suggest import SELECTIONS, UNCERTAINTIES, SuggestConfig
    from dunemap.mapping.config import MapConfig

    d, m = SuggestConfig(), MapConfig()
    p = subparsers.add_parser(
        "suggest", help="propose patches to label where the model is unsure or outside its area of applicability",
        description="Rank square patches of an embedding raster by calibrated uncertainty, the share outside the "
                    "area of applicability and diversity (space, predicted classes), and write the best as numbered "
                    "polygons to label in a GIS; the labels come back through 'dunemap prepare --patches' and "
                    "'dunemap train --init-from'.",
    )
    p.add_argument("image", type=Path, nargs="?", metavar="EMB.tif",
                   help="embedding raster to map first (not needed with --probabilities)")
    add(p, "weights", help="checkpoint that maps EMB.tif (default: none; needed unless --probabilities is given)")
    p.add_argument("--out", type=Path, required=True, metavar="PATCHES",
                   help="patches to write (.gpkg with a QGIS style numbering them, or any vector format)")
    p.add_argument("--n", type=int, default=d.n, metavar="N", help="patches to propose")
    p.add_argument("--size", type=int, default=d.size, metavar="PX", help="patch side in pixels (even)")
    p.add_argument("--method", default=d.method, choices=list(SELECTIONS),
                   help="suggest: uncertainty + share outside the area of applicability, spread over space and "
                        "predicted classes; uncertainty: uncertainty alone; random: valid patches at random")
    p.add_argument("--uncertainty", default=d.uncertainty, choices=list(UNCERTAINTIES),
                   help="margin: 1 - (p1 - p2); entropy: entropy / log(classes), of the calibrated probabilities")
    p.add_argument("--spacing", type=float, default=d.spacing, metavar="SIDES",
                   help="patch sides kept free between two patches (suggest)")
    add(p, "seed", SuggestConfig, help="seed of the random draw (random)")
    p.add_argument("--probabilities", type=Path, metavar="MAP_probabilities.tif",
                   help="a map's probabilities companion, used instead of predicting again (default: none: map first)")
    p.add_argument("--applicability", type=Path, metavar="MAP_applicability.tif",
                   help="the same map's applicability companion (with --probabilities; without it the patches' "
                        "dissimilarity counts as 0; default: none)")
    p.add_argument("--window", type=int, default=m.window, metavar="PX", help="mapping window side in pixels")
    p.add_argument("--stride", type=int, default=m.stride, metavar="PX", help="mapping step between windows")
    add(p, "text_embeddings")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    add_precision_device(p)
    add_no_progress(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dunemap.adapt.suggest import SuggestConfig, suggest_patches
    from dunemap.errors import ConfigError
    from dunemap.mapping.config import MapConfig

    config = config_from_args(SuggestConfig, args)
    predictor = map_config = None
    if args.probabilities is None:
        if args.image is None or args.weights is None:
            raise ConfigError("give EMB.tif and --weights (the map is made first), or a map's --probabilities")
        from dunemap.runtime import load_predictor

        map_config = MapConfig(window=args.window, stride=args.stride, progress=args.progress)
        map_config.validate()
        predictor = load_predictor(model_from_args(args))
    suggestions = suggest_patches(args.image, args.out, config, predictor, map_config, args.probabilities,
                                  args.applicability)
    for s in suggestions:
        print(f"{s.rank:>3}  rows {s.box.row}-{s.box.row_stop} cols {s.box.col}-{s.box.col_stop}  score {s.score:.3f} "
              f"(uncertainty {s.uncertainty:.3f}, outside {s.dissimilarity:.0%}, diversity {s.diversity:.2f})  "
              f"{s.dominant}")
    print(f"wrote {len(suggestions)} patches to {args.out}")
    return 0
