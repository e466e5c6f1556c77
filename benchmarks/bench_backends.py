"""Time the inference backends per 512x512 window: torch fp32 and bf16, ONNX Runtime and OpenVINO fp32 and int8.

For each model (seeded, randomly initialised text-fused SegFormers saved as dunemap checkpoints in a
temporary folder) the backends are built exactly as ``dunemap map --backend NAME`` builds them (the
ONNX export and the int8 models go to a temporary cache; int8 is calibrated statically on
``--calibration`` windows). Inputs are seeded smooth unit-length 64-d embeddings, as AEF pixels are.
After one warm-up call each, the backends are timed round-robin, one call each per round, so that load
from other jobs falls on all of them alike; reported is the median of ``--rounds`` calls, and the
argmax agreement of each with fp32 torch on a window none of them was calibrated on.

    python benchmarks/bench_backends.py --models mit_b0,mit_b2 --out bench_backends.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dunemap.io.atomic import atomic_path
from dunemap.knowledge.catalog import load_catalog
from dunemap.models import create_model
from dunemap.models.checkpoint import save_checkpoint
from dunemap.runtime import load_predictor
from dunemap.runtime.backends import BACKENDS, Samples, argmax_agreement, build_exported, require_package


def smooth_windows(n: int, size: int, seed: int) -> list[np.ndarray]:
    """``n`` (64, size, size) float32 windows of unit vectors varying smoothly in space."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = ndimage.gaussian_filter(rng.standard_normal((64, size, size)), sigma=(0, 6, 6))
        out.append((x / np.linalg.norm(x, axis=0, keepdims=True)).astype(np.float32))
    return out


def bench_model(name: str, folder: Path, window: int, rounds: int, calibration: int) -> list[dict]:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).eval()
    model.set_text(torch.nn.functional.normalize(torch.randn(10, model.config.text_dim), dim=1))
    catalog = load_catalog()
    weights = save_checkpoint(folder / f"{name}.pth", model, list(catalog.names), [tuple(c) for c in catalog.colors])
    fp32 = load_predictor(weights, device="cpu", precision="fp32")
    runners = {("torch", "fp32"): fp32}
    bf16 = load_predictor(weights, device="cpu", precision="bf16")
    runners[("torch", "bf16")] = bf16
    windows = smooth_windows(calibration + 1, window, seed=1)
    samples = Samples("synthetic", windows[1:], [np.ones((window, window), bool)] * calibration)
    for backend in [n for n in BACKENDS if n not in ("auto", "torch")]:
        if require_package(backend, asked=False):
            t0 = time.perf_counter()
            built = build_exported(fp32, backend, window, samples)
            print(f"{name} {backend}: built in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            runners[(backend, built.precision)] = built
    x = torch.from_numpy(windows[0])[None]  # (1, 64, window, window): not a calibration window
    truth = fp32.predict(x)
    valid = np.ones((window, window), bool)
    logits = {k: r.predict(x) for k, r in runners.items()}  # warm-up
    times: dict[tuple[str, str], list[float]] = {k: [] for k in runners}
    for _ in range(rounds):
        for key, runner in runners.items():
            t0 = time.perf_counter()
            runner.predict(x)
            times[key].append(time.perf_counter() - t0)
    return [{"model": name, "backend": k[0], "precision": k[1], "median_s": statistics.median(times[k]),
             "min_s": min(times[k]), "agreement": argmax_agreement(logits[k], truth, valid)} for k in runners]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mit_b0,mit_b2", help="comma-separated architectures")
    parser.add_argument("--window", type=int, default=512, help="window side, px")
    parser.add_argument("--rounds", type=int, default=5, help="timed calls of each backend")
    parser.add_argument("--calibration", type=int, default=4, help="int8 calibration windows")
    parser.add_argument("--threads", type=int, default=2, help="torch, ONNX Runtime and OpenVINO CPU threads")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DUNEMAP_CACHE"] = tmp  # exports of these throw-away models stay out of the user's cache
        for name in args.models.split(","):
            rows += bench_model(name, Path(tmp), args.window, args.rounds, args.calibration)
    command = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/bench_backends.py", *sys.argv[1:]])
    print(f"`{command}` on {platform.processor() or platform.machine()}, {args.threads} threads, load "
          f"{os.getloadavg()[0]:.2f} at the end\n")
    print("| model | backend | precision | s per window (median) | vs torch fp32 | argmax agreement |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        base = next(r for r in rows if r["model"] == row["model"] and r["backend"] == "torch"
                    and r["precision"] == "fp32")
        print(f"| {row['model']} | {row['backend']} | {row['precision']} | {row['median_s']:.3f} | "
              f"{base['median_s'] / row['median_s']:.2f}x | {row['agreement']:.2%} |")
    if args.out:
        with atomic_path(args.out) as tmp_out:
            tmp_out.write_text(json.dumps({"command": command, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
