"""``dunemap evaluate``: metrics of a checkpoint on one split."""

from __future__ import annotations

import argparse
from pathlib import Path

from dunemap.cli.options import add_no_progress, add_overwrite, add_precision_device, add_replace_text, csv_list


def register(subparsers: argparse._SubParsersAction) -> None:
    from dunemap.evaluation import EvalConfig

    p = subparsers.add_parser("evaluate", help="OA, mIoU, Kappa, F1 of a checkpoint on a split",
                              description="Evaluate a checkpoint; prints a table and writes metrics.json and "
                              "confusion_matrix.png. Exact (fp32) unless --precision says otherwise.")
    p.add_argument("--data-root", type=Path, required=True)
    p.add_argument("--weights", type=Path, required=True, help="a dunemap checkpoint or a published MADS state_dict")
    p.add_argument("--split", default="test")
    p.add_argument("--out-dir", type=Path,
                   help="where metrics.json and confusion_matrix.png go (default: a new folder "
                        "./eval_<weights folder>-<weights name>_<split>)")
    p.add_argument("--batch-size", type=int, default=EvalConfig.batch_size)
    p.add_argument("--text-embeddings", type=Path, help="(K, D) .npy; needed only for a published MADS state_dict")
    add_replace_text(p)
    p.add_argument("--catalog", type=Path,
                   help="class catalog: must match the checkpoint's, or (open-vocabulary models) defines new classes")
    p.add_argument("--regions", type=csv_list, help="evaluate only tiles of these regions (manifest.csv)")
    add_precision_device(p, precision=EvalConfig.precision)
    add_overwrite(p, "an existing report in --out-dir")
    add_no_progress(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dunemap.evaluation import EvalConfig, evaluate

    fields = EvalConfig.__dataclass_fields__
    result = evaluate(EvalConfig(**{k: v for k, v in vars(args).items() if k in fields}))
    print(result.table)
    for group, m in result.by_scene.items():  # side by side: memory of the scene against new ground
        print(f"{group.replace('_', '-'):>9} tiles: OA {m.oa:.4f}  mIoU {m.miou:.4f}  Kappa {m.kappa:.4f}")
    if result.precision != "fp32":
        print(f"precision {result.precision}: not exact; the default fp32 gives machine-independent metrics")
    print(f"wrote {result.json_path} and {result.png_path}")
    return 0
