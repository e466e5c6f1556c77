"""``dunemap train``: train a text-fused SegFormer on a seed-layout dataset."""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path

from dunemap.cli.options import add_no_progress, add_overwrite, add_precision_device, csv_list


def register(subparsers: argparse._SubParsersAction) -> None:
    from dunemap.data.transforms import AUGMENTATIONS
    from dunemap.knowledge.text import TEXT_MODES
    from dunemap.models import ARCHITECTURES
    from dunemap.training.config import CLASS_WEIGHTS

    p = subparsers.add_parser("train", help="train on img_dir/ann_dir tiles (the seed's recipe by default)",
                              description="Train a text-fused SegFormer. Defaults: AdamW lr 6e-5 wd 0.01, linear "
                              "decay per epoch, batch 4, 50 epochs, best checkpoint by validation mIoU.")
    p.add_argument("--data-root", type=Path, required=True, help="dataset with img_dir/{train,val} and ann_dir/{train,val}")
    p.add_argument("--save-dir", type=Path, required=True, help="where checkpoints and metrics go")
    p.add_argument("--model", default="mit_b2", choices=sorted(ARCHITECTURES))
    p.add_argument("--bands", dest="in_channels", type=int, default=64, help="bands of every image (AEF: 64)")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=6e-5)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--poly-power", type=float, default=1.0, help="1 = linear decay to zero over the epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--text", default="catalog", choices=sorted(TEXT_MODES),
                   help="class text fused into the model; none = plain SegFormer (ablations)")
    p.add_argument("--text-embeddings", type=Path,
                   help="(K, D) .npy of class text embeddings, e.g. the seed's: stored in the checkpoint as they are, "
                        "never re-encoded")
    p.add_argument("--catalog", type=Path, help="class catalog YAML/TOML (default: the packaged 10 dune classes)")
    p.add_argument("--encoder", default="minilm", help="text encoder of the catalog: minilm or st:DIR")
    p.add_argument("--fusion-stage", type=int, default=3, choices=(0, 1, 2, 3), help="0-based stage fused with text")
    p.add_argument("--head", default="linear", choices=("linear", "text"),
                   help="linear classifier (published) or text: open-vocabulary cosine head over class texts")
    p.add_argument("--augment", default="flip_rot90", choices=sorted(AUGMENTATIONS))
    p.add_argument("--class-weights", default="none", choices=CLASS_WEIGHTS,
                   help="balanced: weight the loss by each class's training-pixel share ** -0.5 (rare classes count more)")
    p.add_argument("--regions", type=csv_list, help="train/validate only on these regions (manifest.csv)")
    p.add_argument("--holdout-region", dest="holdout_regions", type=csv_list,
                   help="leave these regions out of train and val (leave-one-region-out)")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--max-steps-per-epoch", type=int)
    p.add_argument("--resume", action="store_true", help="continue from SAVE_DIR/last.pth")
    add_overwrite(p, "the run already in SAVE_DIR (its checkpoints and metrics)")
    p.add_argument("--stop-after-epochs", type=int, help="end this run after N epochs; continue later with --resume")
    p.add_argument("--no-check-data", dest="check_data", action="store_false",
                   help="skip reading every sample once before training")
    p.add_argument("--no-calibrate", dest="calibrate", action="store_false",
                   help="skip fitting the confidence temperature (val) and the area of applicability (train) at the end")
    add_precision_device(p)
    add_no_progress(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dunemap.training import TrainConfig, train

    from dunemap.errors import ConfigError
    from dunemap.io.outputs import claim_outputs
    from dunemap.training.loop import RUN_FILES

    if args.overwrite and args.resume:
        raise ConfigError("give --resume (continue the run in --save-dir) or --overwrite (replace it), not both")
    fields = TrainConfig.__dataclass_fields__
    config = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun rank 0 owns the save dir
    claim = claim_outputs([], [args.data_root, args.text_embeddings, args.catalog], overwrite=args.overwrite,
                          resume=args.resume, folders=[args.save_dir],
                          companions=[args.save_dir / n for n in RUN_FILES]) if main_rank else contextlib.nullcontext()
    with claim:
        result = train(config)
    if result.history and os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        print(f"best val mIoU {result.best_val_miou:.4f} at epoch {result.best_epoch}; "
              f"checkpoint {result.best_checkpoint}")
    return 0
