"""Error-adjusted class areas of a map against a truth raster: does the 95 % interval hold the truth?

Samples ``--n`` reference points from the class map (stratified by map class, at least
``--min-per-class`` per class, the rest proportional to area), labels them from the truth raster
(as an expert would in the field), and runs the stratified estimator of Olofsson et al. (2014).
Prints, per class, the mapped area, the error-adjusted area with its 95 % interval and the truth
area, and for how many classes the truth lies inside the interval. With ``--repeats R`` it draws R
samples (seeds ``--seed`` .. ``--seed + R - 1``) and also reports how often each class's interval
covered the truth (about 95 % is expected of an honest interval). Writes the figures as JSON to ``--out``:

    python benchmarks/bench_area.py --map demo/map/heldout_classes.tif --truth demo/scene/heldout_labels.tif \\
        --n 600 --min-per-class 30 --repeats 20 --out bench_area.json
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
from pathlib import Path

import numpy as np

from dunemap.accuracy.assess import assess_with_truth
from dunemap.io.atomic import atomic_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--map", type=Path, required=True, help="class map (uint8 GeoTIFF)")
    parser.add_argument("--truth", type=Path, required=True, help="truth class raster of the same classes")
    parser.add_argument("--n", type=int, default=600, help="points per sample (default 600)")
    parser.add_argument("--min-per-class", type=int, default=30, help="at least this many per map class (default 30)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="independent samples (default 1)")
    parser.add_argument("--out", type=Path, help="JSON to write")
    args = parser.parse_args(argv)

    runs = [assess_with_truth(args.map, args.truth, args.n, args.min_per_class, seed)
            for seed in range(args.seed, args.seed + args.repeats)]
    first = runs[0]
    print(f"command: python benchmarks/bench_area.py {shlex.join(sys.argv[1:] if argv is None else argv)}")
    print(f"machine: {platform.machine()}, {platform.system()}, python {platform.python_version()}")
    print(f"sample seed {args.seed}:")
    print(first.table())
    payload = {"command": shlex.join(["python", "benchmarks/bench_area.py", *(sys.argv[1:] if argv is None else argv)]),
               "first_sample": first.to_dict()}
    if args.repeats > 1:
        shown = list(np.flatnonzero(np.any([run.counted() for run in runs], axis=0)))
        covered = np.mean([run.inside() for run in runs], axis=0)
        oa = [run.assessment.estimate.overall for run in runs]
        print(f"\nover {args.repeats} samples: truth inside the 95 % interval")
        for i in shown:
            row = first.rows()[i]
            print(f"  {row['id']} {row['name']:<26} {covered[i] * 100:5.1f} % of samples")
        print(f"  all classes together: {np.mean(covered[shown]) * 100:.1f} %; overall accuracy "
              f"{np.mean(oa):.3f} (sd {np.std(oa):.3f})")
        payload["coverage"] = {first.rows()[i]["name"]: float(covered[i]) for i in shown}
        payload["coverage_all"] = float(np.mean(covered[shown]))
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
