"""``dunemap demo``: the whole pipeline on built-in synthetic data, no arguments needed."""

from __future__ import annotations

import argparse
from pathlib import Path

from dunemap.cli.options import add_no_progress


def register(subparsers: argparse._SubParsersAction) -> None:
    from dunemap.data.splits import SPLIT_MODES
    from dunemap.demo import DemoConfig

    d = DemoConfig()
    p = subparsers.add_parser("demo", help="synthesise dune fields, train, evaluate, map a held-out scene",
                              description="Run the whole pipeline on synthetic Mars-analog dune fields "
                              "(no data to fetch). Interrupted runs continue where they stopped.")
    p.add_argument("--out", type=Path, default=d.out, help=f"output folder (default {d.out})")
    p.add_argument("--model", default=d.model, help=f"architecture (default {d.model})")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"training epochs (default {d.epochs})")
    p.add_argument("--scene-size", type=int, default=d.scene_size, help="synthetic scene side in pixels")
    p.add_argument("--tile", type=int, default=d.tile, help="training tile side in pixels")
    p.add_argument("--scenes-per-region", type=int, default=d.scenes_per_region)
    p.add_argument("--region-px", type=float, default=d.region_px,
                   help=f"typical width of one landform region of the training scenes (default {d.region_px:g})")
    p.add_argument("--split-by", default=d.split_by, choices=list(SPLIT_MODES),
                   help=f"how the synthetic dataset is split (default {d.split_by}: whole scenes held out)")
    p.add_argument("--map-size", type=int, default=d.map_size, help="held-out scene side in pixels")
    p.add_argument("--map-window", type=int, default=d.map_window,
                   help=f"mapping window side in pixels (default {d.map_window})")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--precision", default=d.precision, choices=("auto", "fp32", "bf16"))
    add_no_progress(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dunemap.demo import DemoConfig, run_demo

    from dunemap.io.outputs import claim_outputs

    fields = DemoConfig.__dataclass_fields__
    with claim_outputs([], folders=[args.out], resume=True):  # the demo continues its own earlier run
        result = run_demo(DemoConfig(**{k: v for k, v in vars(args).items() if k in fields}))
    rows = [("test tiles", result.test_metrics),
            *((f"  {g.replace('_', '-')}", m) for g, m in result.test_by_scene.items()),
            ("held-out scene", result.map_metrics), ("  random forest", result.rf_map_metrics)]
    for name, m in rows:
        print(f"{name + ':':<16} OA {m['oa']:.4f}  mIoU {m['miou']:.4f}  Kappa {m['kappa']:.4f}")
    print(f"side by side: {result.comparison}")
    print(f"report: {result.report}")
    return 0
