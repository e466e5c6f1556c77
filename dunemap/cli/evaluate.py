"""``dunemap evaluate``: metrics of a checkpoint on one split."""

from __future__ import annotations

import argparse
from pathlib import Path

from dunemap.cli.options import (
    add,
    add_no_progress,
    add_overwrite,
    add_precision_device,
    add_replace_text,
    config_from_args,
    default_of,
    model_from_args,
)
from dunemap.evaluation import EXACT_PRECISION, EvalConfig, evaluate
from dunemap.runtime import ModelSpec


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("evaluate", help="OA, mIoU, Kappa, F1 of a checkpoint on a split",
                              description="Evaluate a checkpoint; prints a table and writes metrics.json and "
                              "confusion_matrix.png. Exact (fp32) unless --precision says otherwise.")
    add(p, "data_root", required=True)
    add(p, "weights", required=True)
    p.add_argument("--split", default=default_of(EvalConfig, "split"), help="split to evaluate: train, val or test")
    p.add_argument("--out-dir", type=Path,
                   help="where metrics.json and confusion_matrix.png go (default: a new folder "
                        "./eval_<weights folder>-<weights name>_<split>)")
    add(p, "batch_size", EvalConfig)
    add(p, "text_embeddings", ModelSpec)
    add_replace_text(p)
    add(p, "catalog", ModelSpec, help="class catalog: must match the checkpoint's, or (open-vocabulary models) "
                                       "defines new classes (default: the checkpoint's)")
    add(p, "regions", EvalConfig, help="evaluate only tiles of these regions (comma-separated, manifest.csv; "
                                       "default: all)")
    add_precision_device(p, precision=EXACT_PRECISION)
    add_overwrite(p, "an existing report in --out-dir")
    add_no_progress(p)
    p.set_defaults(func=run, config_class=EvalConfig)


def run(args: argparse.Namespace) -> int:
    result = evaluate(config_from_args(EvalConfig, args, model=model_from_args(args)))
    print(result.table)
    for group, m in result.by_scene.items():  # side by side: memory of the scene against new ground
        print(f"{group.replace('_', '-'):>9} tiles: OA {m.oa:.4f}  mIoU {m.miou:.4f}  Kappa {m.kappa:.4f}")
    if result.precision != "fp32":
        print(f"precision {result.precision}: not exact; the default fp32 gives machine-independent metrics")
    print(f"wrote {result.json_path} and {result.png_path}")
    return 0
