"""``dunemap train``: train a text-fused SegFormer on a seed-layout dataset."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from dunemap.cli.options import (add, add_alias, add_no_progress, add_overwrite, add_precision_device, config_from_args,
                                 csv_list, default_of, fraction)


def register(subparsers: argparse._SubParsersAction) -> None:
    from dunemap.data.transforms import AUGMENTATIONS
    from dunemap.knowledge.text import TEXT_MODES
    from dunemap.models import ARCHITECTURES
    from dunemap.training.config import CLASS_WEIGHTS, FINETUNE_RECIPE, TRAIN_LAYERS, TrainConfig

    p = subparsers.add_parser("train", help="train on img_dir/ann_dir tiles (the seed's recipe by default)",
                              description="Train a text-fused SegFormer. Defaults: AdamW lr 6e-5 wd 0.01, linear "
                              "decay per epoch, batch 4, 50 epochs, best checkpoint by validation mIoU. Every run "
                              "writes its resolved options to SAVE_DIR/config.yaml; --config reads such a file.")
    p.add_argument("--config", type=Path, metavar="RUN.yaml",
                   help="options from a YAML file (keys as the long options, e.g. data-root or data_root); flags "
                        "given on the command line win (default: none)")
    add(p, "data_root", TrainConfig, help="dataset with img_dir/{train,val} and ann_dir/{train,val} (required, here or in --config)")
    p.add_argument("--save-dir", type=Path, metavar="RUN", help="where checkpoints, metrics and config.yaml go (required, here or in --config)")
    add(p, "model", TrainConfig, choices=sorted(ARCHITECTURES))
    add(p, "in_channels", TrainConfig)
    add(p, "epochs", TrainConfig)
    add(p, "batch_size", TrainConfig)
    add(p, "lr", TrainConfig)
    p.add_argument("--weight-decay", type=float, default=default_of(TrainConfig, "weight_decay"), help="AdamW weight decay")
    p.add_argument("--warmup-steps", type=int, metavar="N", default=default_of(TrainConfig, "warmup_steps"),
                   help="raise the learning rate linearly over the first N optimiser steps; 0 = none, the published "
                        "recipe")
    p.add_argument("--poly-power", type=float, default=default_of(TrainConfig, "poly_power"),
                   help="1 = linear decay to zero over the epochs")
    p.add_argument("--loss-margin", type=int, metavar="PX", default=default_of(TrainConfig, "loss_margin"),
                   help="leave this many pixels along each tile edge out of the loss (their labels may depend on "
                        "ground beyond the tile); 0 = every pixel, the published recipe")
    p.add_argument("--ema-decay", type=float, metavar="D", default=default_of(TrainConfig, "ema_decay"),
                   help="validate and keep an exponential moving average of the weights, updated every step with "
                        "this decay (e.g. 0.99); 0 = off, the published recipe")
    add(p, "seed", TrainConfig)
    p.add_argument("--text", default=default_of(TrainConfig, "text"), choices=sorted(TEXT_MODES),
                   help="class text fused into the model; none = plain SegFormer (ablations)")
    add(p, "text_embeddings", TrainConfig,
        help="(K, D) .npy of class text embeddings, e.g. the seed's: stored in the checkpoint as they are, "
             "never re-encoded (default: encode the catalog)")
    add(p, "catalog", TrainConfig)
    add(p, "encoder", TrainConfig)
    p.add_argument("--fusion-stage", type=int, default=default_of(TrainConfig, "fusion_stage"), choices=(0, 1, 2, 3),
                   help="0-based stage fused with text")
    p.add_argument("--head", default=default_of(TrainConfig, "head"), choices=("linear", "text"),
                   help="linear classifier (published) or text: open-vocabulary cosine head over class texts")
    p.add_argument("--augment", default=default_of(TrainConfig, "augment"), choices=sorted(AUGMENTATIONS),
                   help="training augmentation")
    p.add_argument("--class-weights", default=default_of(TrainConfig, "class_weights"), choices=CLASS_WEIGHTS,
                   help="balanced: weight the loss by each class's training-pixel share ** -0.5 (rare classes count more)")
    add(p, "regions", TrainConfig, help="train/validate only on these regions (comma-separated, manifest.csv; "
                                        "default: all)")
    add(p, "holdout_regions", TrainConfig, help="leave these regions out of train and val (comma-separated; "
                                                "default: none)")
    p.add_argument("--num-workers", type=int, metavar="N", default=default_of(TrainConfig, "num_workers"),
                   help="DataLoader worker processes")
    p.add_argument("--max-steps-per-epoch", type=int, metavar="N", help="cap the steps of every epoch (default: all)")
    p.add_argument("--resume", action="store_true", help="continue from SAVE_DIR/last.pth")
    add_overwrite(p, "the run already in SAVE_DIR (its checkpoints and metrics)")
    p.add_argument("--stop-after-epochs", type=int, metavar="N",
                   help="end this run after N epochs; continue later with --resume (default: run all epochs)")
    p.add_argument("--no-check-data", dest="check_data", action="store_false",
                   help="skip reading every sample once before training")
    p.add_argument("--no-calibrate", dest="calibrate", action="store_false",
                   help="skip fitting the confidence temperature (val) and the area of applicability (train) at the end")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard scalars to SAVE_DIR/tensorboard (needs the tensorboard package)")
    recipe = " ".join(f"--{k.replace('_', '-')}" + ("" if v is True else f" {v:g}" if isinstance(v, float) else f" {v}")
                      for k, v in FINETUNE_RECIPE.items())
    p.add_argument("--init-from", type=Path, metavar="RUN/best_model.pth",
                   help="fine-tune this checkpoint on the tiles of --data-root (e.g. from 'dunemap prepare "
                        "--patches'), mixed with --replay tiles: its model, bands, classes and class text are kept; "
                        f"options not given take the fine-tune recipe {recipe} (default: none: a new model)")
    p.add_argument("--replay", type=Path, metavar="DATA",
                   help="with --init-from: the dataset the checkpoint was trained on; its train tiles fill "
                        "--replay-share of every batch (so other regions are not forgotten) and its val split "
                        "validates (required with --init-from; default: none)")
    p.add_argument("--replay-share", type=fraction, metavar="FRAC", default=default_of(TrainConfig, "replay_share"),
                   help="share of each fine-tuning batch drawn from the --replay train tiles (0: none)")
    p.add_argument("--train-layers", choices=list(TRAIN_LAYERS), default=default_of(TrainConfig, "train_layers"),
                   help="the parameters a fine-tune updates: " + "; ".join(f"{k}: {v}" for k, v in TRAIN_LAYERS.items())
                        + f" (default: {default_of(TrainConfig, 'train_layers')}; "
                          f"{FINETUNE_RECIPE['train_layers']} with --init-from)")
    p.add_argument("--freeze-bn", action=argparse.BooleanOptionalAction, default=default_of(TrainConfig, "freeze_bn"),
                   help="keep the BatchNorm running statistics while fine-tuning (default: off; on with --init-from)")
    p.add_argument("--scene-prior", action=argparse.BooleanOptionalAction, default=default_of(TrainConfig, "scene_prior"),
                   help="with --init-from: fit the class shares of the new tiles' ground (their source rasters and "
                        "labels) and store them in the checkpoint; maps of rasters on that ground use them "
                        "(docs/trust.md; default: on)")
    add_precision_device(p, TrainConfig)
    add_no_progress(p)
    add_alias(p, "--holdout", "--holdout-region", "holdout_regions", type=csv_list)
    p.set_defaults(config_class=TrainConfig)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dunemap.errors import ConfigError
    from dunemap.io.outputs import claim_outputs
    from dunemap.training import TrainConfig, train
    from dunemap.training.loop import RUN_FILES

    from_file = apply_config_file(args, args.config) if args.config is not None else set()
    for flag in ("data_root", "save_dir"):
        if getattr(args, flag) is None:
            raise ConfigError(f"--{flag.replace('_', '-')} is required (on the command line or in --config)")
    if args.overwrite and args.resume:
        raise ConfigError("give --resume (continue the run in --save-dir) or --overwrite (replace it), not both")
    if args.init_from is not None:  # a fine-tune: what is not given comes from the checkpoint or the recipe
        from dunemap.training.finetune import DECIDED, finetune_config

        given = _given_dests(_train_parser(), getattr(args, "_argv", None) or sys.argv[1:]) | from_file
        config = finetune_config(**{k: v for k, v in vars(args).items()
                                    if k in TrainConfig.__dataclass_fields__ and (k in given or k not in DECIDED)})
    else:
        config = config_from_args(TrainConfig, args)
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun rank 0 owns the save dir
    inputs = [args.data_root, args.text_embeddings, args.catalog, args.config, args.init_from, args.replay]
    claim = claim_outputs([], inputs, overwrite=args.overwrite, resume=args.resume, folders=[args.save_dir],
                          companions=[args.save_dir / n for n in RUN_FILES]) if main_rank else contextlib.nullcontext()
    with claim:
        result = train(config)
    if result.history and os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        print(f"best val mIoU {result.best_val_miou:.4f} at epoch {result.best_epoch}; "
              f"checkpoint {result.best_checkpoint}")
    return 0


def apply_config_file(args: argparse.Namespace, path: Path) -> set[str]:
    """Fill ``args`` from a YAML file of options; an option given on the command line keeps its value.

    Keys are the long options with or without dashes (``data-root``, ``data_root``, ``bands``); an unknown
    key is an error naming the file, as is a file that is not a mapping. Returns the dests the file set.
    """
    from dunemap.errors import ConfigError
    from dunemap.training.config import TrainConfig, read_config_file

    values = read_config_file(path)
    fields = TrainConfig.__dataclass_fields__
    parser = _train_parser()
    by_flag = {a.option_strings[-1].lstrip("-").replace("-", "_"): a for a in parser._actions if a.option_strings}
    by_dest = {a.dest: a for a in parser._actions if a.option_strings}
    given = _given_dests(parser, getattr(args, "_argv", None) or sys.argv[1:])
    done: set[str] = set()
    for key, value in values.items():
        name = key.replace("-", "_")
        action = by_flag.get(name) or by_dest.get(name)
        if action is None and name in fields and name not in given:  # a TrainConfig field without a flag
            setattr(args, name, value)
            done.add(name)
            continue
        if action is None or action.dest in ("config", "help"):
            raise ConfigError(f"{path}: unknown option {key!r}; use the long options of dunemap train")
        if action.dest in given:
            continue
        if isinstance(action, argparse._StoreFalseAction) and name not in by_dest:  # no-calibrate: true
            value = not value
        if isinstance(value, str) and action.type is not None and action.nargs is None:
            value = action.type(value)
        elif action.dest in ("regions", "holdout_regions") and isinstance(value, str):
            value = csv_list(value)
        setattr(args, action.dest, value)
        done.add(action.dest)
    for name in ("data_root", "save_dir", "text_embeddings", "catalog", "init_from", "replay"):
        if isinstance(getattr(args, name), str):
            setattr(args, name, Path(getattr(args, name)))
    return done


def _train_parser() -> argparse.ArgumentParser:
    from dunemap.cli import build_parser, leaf_parsers

    return leaf_parsers(build_parser())["train"]


def _given_dests(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The dests of the options spelled out on the command line (so a config file does not override them)."""
    flags = {}
    for a in parser._actions:
        for s in a.option_strings:
            flags[s] = a.dest
    given = set()
    for token in argv:
        flag = token.split("=", 1)[0]
        if flag in flags:
            given.add(flags[flag])
    return given
