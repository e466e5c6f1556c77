"""Time ``generate_scene`` on this machine: seconds per synthetic scene, and the share of each stage.

Each region's scene is generated ``--repeats`` times after one untimed warm-up call (which also
builds the cached embedding network); the median, min and max wall times are reported per region,
with the throughput in megapixels per second and the peak resident memory of the process. The goal
is a 2048 x 2048 scene in under 30 s. Prints a markdown table (with the exact command) and writes
the same figures as JSON to ``--out``:

    python benchmarks/bench_synth.py --size 2048 --out bench_synth.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import sys
import time
from pathlib import Path

from dunemap.io.atomic import atomic_path
from dunemap.regions import REGIONS
from dunemap.synth.scene import SceneConfig, generate_scene

TARGET_2048_S = 30.0


def time_scene(cfg: SceneConfig, repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``generate_scene(cfg)`` after one untimed warm-up."""
    generate_scene(cfg)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        generate_scene(cfg)
        times.append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=2048, help="scene side in pixels (default: 2048)")
    parser.add_argument("--regions", default="namib", help="comma-separated regions, or 'all' (default: namib)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per region (default: 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    regions = sorted(REGIONS) if args.regions == "all" else [r.strip() for r in args.regions.split(",") if r.strip()]

    rows = []
    for region in regions:
        cfg = SceneConfig(size=(args.size, args.size), region=region, seed=args.seed, nodata_holes=True)
        times = time_scene(cfg, args.repeats)
        median = statistics.median(times)
        rows.append({
            "region": region, "size": args.size, "median_s": median, "min_s": min(times), "max_s": max(times),
            "mpix_per_s": args.size * args.size / 1e6 / median,
        })
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB

    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    print(f"`{shlex.join([sys.executable.rsplit('/', 1)[-1], *sys.argv])}` on {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={threads}, peak RSS {peak_mib:.0f} MiB")
    print()
    print("| benchmark | region | scene (px) | median s | min s | max s | Mpx/s | target |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        target = f"< {TARGET_2048_S:.0f} s" if r["size"] == 2048 else "-"
        print(f"| synth scene | {r['region']} | {r['size']}x{r['size']} | {r['median_s']:.2f} | {r['min_s']:.2f} | "
              f"{r['max_s']:.2f} | {r['mpix_per_s']:.2f} | {target} |")
    if args.out is not None:
        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps({"rows": rows, "peak_rss_mib": peak_mib, "argv": sys.argv}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
