"""``dunemap evaluate``: metrics of a checkpoint on one split."""

from __future__ import annotations

import argparse
from pathlib import Path

from dunemap.cli.options import add_no_progress, add_precision_device, csv_list


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("evaluate", help="OA, mIoU, Kappa, F1 of a checkpoint on a split",
                              description="Evaluate a checkpoint; prints a table and writes metrics.json and "
                              "confusion_matrix.png.")
    p.add_argument("--data-root", type=Path, required=True)
    p.add_argument("--weights", type=Path, required=True, help="a dunemap checkpoint or a published MADS state_dict")
    p.add_argument("--split", default="test")
    p.add_argument("--out-dir", type=Path, help="default: WEIGHTS_DIR/eval_SPLIT")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--text-embeddings", type=Path, help="(K, D) .npy; needed only for a published MADS state_dict")
    p.add_argument("--catalog", type=Path,
                   help="class catalog: must match the checkpoint's, or (open-vocabulary models) defines new classes")
    p.add_argument("--regions", type=csv_list, help="evaluate only tiles of these regions (manifest.csv)")
    add_precision_device(p)
    add_no_progress(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dunemap.evaluation import EvalConfig, evaluate

    fields = EvalConfig.__dataclass_fields__
    result = evaluate(EvalConfig(**{k: v for k, v in vars(args).items() if k in fields}))
    print(result.table)
    for group, m in result.by_scene.items():  # side by side: memory of the scene against new ground
        print(f"{group.replace('_', '-'):>9} tiles: OA {m.oa:.4f}  mIoU {m.miou:.4f}  Kappa {m.kappa:.4f}")
    print(f"wrote {result.json_path} and {result.png_path}")
    return 0
