"""``dunemap map``: turn an embedding raster (or a set of tiles) into a class-map Cloud-Optimized GeoTIFF."""

from __future__ import annotations

import argparse
from pathlib import Path

from dunemap.cli.options import add_no_progress, add_precision_device
from dunemap.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    from dunemap.mapping.config import FRACTION_ENCODINGS, MapConfig
    from dunemap.mapping.windows import BLEND_MODES

    d = MapConfig()
    p = subparsers.add_parser(
        "map", help="map a whole embedding raster to a class-map COG (sliding windows, resumable)",
        description="Predict dune classes over a float or AEF int8 embedding raster (GeoTIFF, VRT, or several "
        "tiles mosaicked on the fly) with overlapping windows blended smoothly, streaming block by block. "
        "Writes a colour-tabled uint8 COG (255 = nodata); a killed run started again resumes.",
    )
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="embedding raster(s) with the model's band count")
    p.add_argument("--weights", type=Path, required=True, help="a dunemap checkpoint or a published MADS state_dict")
    p.add_argument("--out", type=Path, required=True, help="output class map (COG); companions go beside it")
    p.add_argument("--text-embeddings", type=Path, help="(K, D) .npy; needed only for a published MADS state_dict")
    p.add_argument("--window", type=int, default=d.window, help=f"window side in pixels (default {d.window})")
    p.add_argument("--stride", type=int, default=d.stride,
                   help=f"step between windows in pixels, a multiple of 32 (default {d.stride})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"windows per forward pass (default {d.batch_size})")
    p.add_argument("--blend", default=d.blend, choices=sorted(BLEND_MODES),
                   help=f"weighting of overlapping windows (default {d.blend}; uniform = plain averaging)")
    p.add_argument("--block-size", type=int, default=d.block_size,
                   help="output block side in pixels, a multiple of 16 (default 0 = sized from the input type "
                        "to stay within the memory budget)")
    p.add_argument("--confidence", default=d.confidence, choices=sorted(FRACTION_ENCODINGS),
                   help="also write OUT_confidence.tif with the maximum class probability")
    p.add_argument("--probabilities", default=d.probabilities, choices=sorted(FRACTION_ENCODINGS),
                   help="also write OUT_probabilities.tif with one probability band per class")
    p.add_argument("--cog-tile", type=int, default=d.cog_tile, help=f"COG tile side (default {d.cog_tile})")
    p.add_argument("--no-resume", dest="resume", action="store_false",
                   help="ignore the journal of an earlier, interrupted run and start over")
    p.add_argument("--no-prefetch", dest="prefetch", action="store_false",
                   help="read blocks in the main thread instead of ahead in the background")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    add_precision_device(p)
    add_no_progress(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from dunemap.mapping.engine import MapConfig, map_checkpoint

    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads {args.threads} must be at least 1")
        torch.set_num_threads(args.threads)
    fields = MapConfig.__dataclass_fields__
    config = MapConfig(**{k: v for k, v in vars(args).items() if k in fields})
    inputs = args.inputs[0] if len(args.inputs) == 1 else args.inputs
    result = map_checkpoint(inputs, args.weights, args.out, config, device=args.device, precision=args.precision,
                            text_embeddings=args.text_embeddings)
    print(result.summary())
    return 0
