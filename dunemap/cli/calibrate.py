"""``dunemap calibrate``: fit a checkpoint's confidence temperature and area of applicability on a labelled dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from dunemap.cli.options import add, add_no_progress, add_overwrite, default_of, model_from_args
from dunemap.io.outputs import claim_outputs
from dunemap.runtime import ModelSpec
from dunemap.trust.fit import calibrate_checkpoint


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "calibrate", help="calibrated confidence and an area of applicability for a checkpoint",
        description="Fit the softmax temperature on a labelled split the model was not trained on (default val) "
        "and describe the training split (default train) for the area of applicability; write a new checkpoint "
        "carrying both. A published MADS state_dict has neither: this is how it gets them.",
    )
    add(p, "weights", required=True)
    add(p, "data_root", required=True, help="seed-layout dataset with the labelled splits")
    p.add_argument("--out", type=Path, required=True, help="the calibrated checkpoint to write (never the input)")
    p.add_argument("--split", default=default_of(calibrate_checkpoint, "calibration_split"),
                   help="split to fit the temperature on")
    p.add_argument("--applicability-split", default=default_of(calibrate_checkpoint, "applicability_split"),
                   help="split that describes the training data; 'none' skips the area of applicability")
    add(p, "text_embeddings", ModelSpec)
    add(p, "regions", calibrate_checkpoint, help="calibrate and describe only tiles of these regions, as the model "
        "was trained (comma-separated, manifest.csv; default: all)")
    add(p, "holdout_regions", calibrate_checkpoint, field="exclude_regions",
        help="leave these regions out, as a leave-one-region-out model was trained (comma-separated; default: none)")
    add(p, "device", ModelSpec, help="auto, cpu, cuda or cuda:N (computed in fp32)")
    add(p, "seed", calibrate_checkpoint, help="seed of the pixel samples")
    add_overwrite(p, "an existing --out checkpoint")
    add_no_progress(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    split = None if args.applicability_split.lower() == "none" else args.applicability_split
    model = model_from_args(args, precision="fp32")  # trust is fitted exactly, whatever the machine
    with claim_outputs([args.out], model.files(), overwrite=args.overwrite):
        fit = calibrate_checkpoint(model, args.data_root, args.out, calibration_split=args.split,
                                   applicability_split=split, seed=args.seed, regions=args.regions,
                                   exclude_regions=args.holdout_regions)
    print(fit.summary())
    print(f"wrote {args.out}")
    return 0
