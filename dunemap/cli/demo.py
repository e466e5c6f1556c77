"""``dunemap demo``: the whole pipeline on built-in synthetic data, no arguments needed."""

from __future__ import annotations

import argparse
from pathlib import Path

from dunemap.cli.options import add, add_no_progress, config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    from dunemap.data.splits import SPLIT_MODES
    from dunemap.demo import DemoConfig

    d = DemoConfig()
    p = subparsers.add_parser("demo", help="synthesise dune fields, train, evaluate, map a held-out scene",
                              description="Run the whole pipeline on synthetic Mars-analog dune fields "
                              "(no data to fetch). Interrupted runs continue where they stopped.")
    p.add_argument("--out", type=Path, default=d.out, metavar="DIR", help="output folder")
    add(p, "model", DemoConfig)
    add(p, "epochs", DemoConfig)
    add(p, "scene_size", DemoConfig)
    add(p, "tile", DemoConfig, help="training tile side in pixels")
    add(p, "scenes_per_region", DemoConfig)
    add(p, "region_px", DemoConfig, help="typical width of one landform region of the training scenes, pixels")
    p.add_argument("--split-by", default=d.split_by, choices=list(SPLIT_MODES),
                   help="how the synthetic dataset is split (scene: whole scenes held out)")
    p.add_argument("--map-size", type=int, default=d.map_size, metavar="PX", help="held-out scene side in pixels")
    p.add_argument("--map-window", type=int, default=d.map_window, metavar="PX", help="mapping window side in pixels")
    p.add_argument("--map-stride", type=int, default=d.map_stride, metavar="PX",
                   help="step between mapping windows in pixels; 0 = half the window")
    add(p, "seed", DemoConfig)
    add(p, "precision", DemoConfig)
    add_no_progress(p)
    p.set_defaults(func=run, config_class=DemoConfig)


def run(args: argparse.Namespace) -> int:
    from dunemap.demo import DemoConfig, run_demo
    from dunemap.io.outputs import claim_outputs

    with claim_outputs([], folders=[args.out], resume=True):  # the demo continues its own earlier run
        result = run_demo(config_from_args(DemoConfig, args))
    rows = [("test tiles", result.test_metrics),
            *((f"  {g.replace('_', '-')}", m) for g, m in result.test_by_scene.items()),
            ("held-out scene", result.map_metrics), ("  random forest", result.rf_map_metrics)]
    for name, m in rows:
        print(f"{name + ':':<16} OA {m['oa']:.4f}  mIoU {m['miou']:.4f}  Kappa {m['kappa']:.4f}")
    print(f"side by side: {result.comparison}")
    print(f"report: {result.report}")
    return 0
