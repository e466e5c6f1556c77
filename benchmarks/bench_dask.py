"""Benchmark mapping on a local Dask cluster: blocks/s with 1, 2, ... workers, and scale-out estimates.

Usage::

    python benchmarks/bench_dask.py [--size 2048] [--model mit_b2] [--block-size 512] [--workers 1 2]
                                    [--precision auto] [--work DIR] [--gpu-speedup 40]

The benchmark uses a synthetic ``size x size`` int8 AEF-like raster (smooth random unit vectors,
quantised) and a randomly initialised model saved as a checkpoint. Both are cached in ``--work`` by
size, model and seed. For each worker count it starts a LocalCluster of that many single-threaded
worker processes and loads the model on every worker (so start-up is not timed). It then maps the
raster with ``dunemap.mapping.batch.map_many``. It prints markdown tables: throughput, the
unit of work (one block: pixels, windows, bytes read and bytes sent back), and an estimate of wall
time for the Namib Sand Sea and for all of Earth's active sand seas. The estimate is built from the
measured cost per block and from the stated assumptions. Re-runnable; nothing here is committed.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
from bench_mapping import make_noise_raster  # the AEF-like int8 test raster, shared by both benchmarks

PX_PER_KM2 = 10_000  # 10 m pixels
NAMIB_KM2 = 34_000  # Namib Sand Sea, about 34,000 km2 (UNESCO World Heritage listing)
GLOBAL_SAND_SEAS_KM2 = 5_000_000  # ASSUMPTION: active sand seas (ergs) worldwide, order of magnitude
PUBLISHED_CPU_S_PER_TILE = 0.43  # published CPU inference time of one 512x512 tile (MADS)


def make_checkpoint(path: Path, model_name: str, seed: int) -> Path:
    import torch

    from dunemap.knowledge.catalog import load_catalog
    from dunemap.models import create_model
    from dunemap.models.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    model = create_model(model_name, num_classes=10, text_dim=512).eval()
    model.set_text(torch.nn.functional.normalize(torch.randn(10, 512), dim=1))
    catalog = load_catalog()
    return save_checkpoint(path, model, list(catalog.names), [tuple(c) for c in catalog.colors])


def _load_model_on_worker(spec) -> int:
    from dunemap.mapping.distributed import worker_predictor

    worker_predictor(spec)
    return os.getpid()


def time_cluster(workers: int, raster: Path, weights: Path, config, precision: str, out: Path) -> dict:
    """Map ``raster`` on a fresh LocalCluster of ``workers`` processes with the model already loaded."""
    from dunemap.mapping.batch import map_many
    from dunemap.mapping.config import ClusterConfig
    from dunemap.mapping.distributed import PredictorSpec, open_client
    from dunemap.mapping.jobs import MapJob

    t0 = time.perf_counter()
    with open_client(ClusterConfig(workers=workers, dashboard_address=":0")) as client:
        client.wait_for_workers(workers)
        client.run(_load_model_on_worker, PredictorSpec.from_files(weights, precision=precision))
        startup = time.perf_counter() - t0
        result = map_many([MapJob((raster,), out)], weights, config, precision=precision, client=client)
    m = result.maps[0]
    return {"workers": workers, "startup_s": startup, "seconds": result.seconds, "tasks": result.tasks,
            "windows": m.windows_predicted, "assemble_s": result.assemble_seconds, "pixels": m.height * m.width}


class ZeroLogits:
    """A stand-in model that costs nothing. Timing blocks with it leaves reading, de-quantising and blending."""

    num_classes = 10

    def predict(self, x):
        import torch

        return torch.zeros(x.shape[0], self.num_classes, x.shape[2], x.shape[3])


def time_overhead(raster: Path, config) -> float:
    """Seconds per window of everything but the model, in this process on one thread."""
    import torch

    from dunemap.mapping.engine import plan_map
    from dunemap.mapping.predict import predict_block
    from dunemap.raster.reader import EmbeddingReader

    torch.set_num_threads(1)
    with EmbeddingReader(raster) as reader:
        blocks = [b for b in plan_map(reader, config).blocks if b.windows]
        t0 = time.perf_counter()
        windows = sum(predict_block(reader, ZeroLogits(), b, config).windows_predicted for b in blocks)
    return (time.perf_counter() - t0) / windows


def block_stats(size: int, config, classes: int = 10) -> dict:
    """Average unit of work of the plan: pixels, windows, bytes read (int8) and bytes returned per block."""
    from dunemap.mapping.windows import plan_blocks

    blocks = [b for b in plan_blocks(size, size, config.window, config.stride, config.block_size) if b.windows]
    extent = np.mean([b.extent.height * b.extent.width for b in blocks])
    return {"blocks": len(blocks), "core_px": config.block_size ** 2, "extent_px": extent,
            "windows": np.mean([len(b.windows) for b in blocks]), "read_bytes": extent * 64,
            "result_bytes": extent * (4 * classes + 4 + 1)}  # acc float32 x K, weight sum float32, valid bool


def _hms(seconds: float) -> str:
    if seconds < 1:
        return "<1 s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=2048, help="raster side in pixels (default 2048)")
    parser.add_argument("--model", default="mit_b2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--block-size", type=int, default=512,
                        help="block side (default 512: 16 blocks on 2048 px; the MapConfig default for int8 is 1024)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to time (default 1 2)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--work", type=Path, default=Path("runs/bench_dask"))
    parser.add_argument("--gpu-speedup", type=float, default=40.0,
                        help="ASSUMED speed-up of the model on one GPU over the published 0.43 s/tile CPU figure "
                             "(default 40)")
    parser.add_argument("--estimate-workers", type=int, nargs="+", default=[1, 8, 64, 256])
    args = parser.parse_args()

    from dunemap.mapping.config import MapConfig
    from dunemap.runtime import resolve_precision

    args.work.mkdir(parents=True, exist_ok=True)
    raster = args.work / f"aef_{args.size}_s{args.seed}.tif"
    weights = args.work / f"{args.model}_s{args.seed}.pth"
    if not raster.exists():
        make_noise_raster(raster, args.size, args.seed)
    if not weights.exists():
        make_checkpoint(weights, args.model, args.seed)
    config = MapConfig(block_size=args.block_size, resume=False, progress=False).for_model(None)
    stats = block_stats(args.size, config)

    runs = [time_cluster(n, raster, weights, config, args.precision, args.work / f"map_{n}w.tif")
            for n in args.workers]
    overhead = time_overhead(raster, config)

    import torch

    precision = resolve_precision(args.precision, torch.device("cpu"))
    print(f"## Dask mapping benchmark: {args.model} (random weights), {args.size}x{args.size} int8 raster, "
          f"window {config.window}, stride {config.stride}, block {config.block_size}, {precision} on CPU\n")
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores shared with other "
          f"users (load average {os.getloadavg()[0]:.1f} at the end), torch {torch.__version__}, "
          "one thread per worker. Model loading and cluster start-up are not timed.\n")
    print("| workers | wall s | block tasks | blocks/s | windows/s | km2/min | worker-s per block "
          "| client assembling s | start-up s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        km2 = r["pixels"] / PX_PER_KM2
        print(f"| {r['workers']} | {r['seconds']:.1f} | {r['tasks']} | {r['tasks'] / r['seconds']:.3f} | "
              f"{r['windows'] / r['seconds']:.3f} | {km2 / r['seconds'] * 60:.2f} | "
              f"{r['seconds'] * r['workers'] / r['tasks']:.1f} | {r['assemble_s']:.2f} | {r['startup_s']:.1f} |")
    if len(runs) > 1:
        print("\nSpeed-up over the first row: " + ", ".join(
            f"{r['workers']} workers {runs[0]['seconds'] / r['seconds']:.2f}x" for r in runs[1:]))

    print("\n### Unit of work: one block\n")
    print("| output px (core) | read px (extent) | windows | bytes read (int8) | bytes returned to the client |")
    print("|---:|---:|---:|---:|---:|")
    print(f"| {stats['core_px']:,} | {stats['extent_px']:,.0f} | {stats['windows']:.2f} | "
          f"{stats['read_bytes'] / 2**20:.1f} MiB | {stats['result_bytes'] / 2**20:.1f} MiB |")

    best = runs[-1]
    cpu_s_per_px = best["seconds"] * best["workers"] / best["pixels"]  # worker-seconds per output pixel, measured
    client_px_per_s = best["pixels"] / max(best["assemble_s"], 1e-9)  # what one client can assemble, measured
    windows_per_px = best["windows"] / best["pixels"]
    gpu_model_s = PUBLISHED_CPU_S_PER_TILE / args.gpu_speedup
    gpu_s_per_window = gpu_model_s + overhead  # one thread per worker: reading and blending do not overlap the GPU
    gpu_s_per_px = windows_per_px * gpu_s_per_window
    print("\n### Estimates (from the last row above and the stated assumptions)\n")
    print(f"- Measured: {cpu_s_per_px * PX_PER_KM2:.2f} CPU worker-seconds per km2 (one shared core), "
          f"{windows_per_px * PX_PER_KM2:.3f} windows per km2 at stride {config.stride}, and one client "
          f"assembles {client_px_per_s / PX_PER_KM2:.0f} km2/s ({best['assemble_s'] / best['tasks'] * 1000:.0f} ms "
          f"per block, receiving included). Reading, de-quantising and blending (everything but the model) "
          f"cost {overhead * 1000:.0f} ms per window on one thread.")
    print(f"- ASSUMPTION: the model runs a {config.window}x{config.window} window on one GPU in "
          f"{PUBLISHED_CPU_S_PER_TILE} s / {args.gpu_speedup:g} = {gpu_model_s * 1000:.1f} ms. This is the "
          f"published CPU figure divided by an assumed GPU speed-up; it was not measured here. A GPU worker then "
          f"takes {gpu_s_per_window * 1000:.0f} ms per window, the model plus the CPU work measured above.")
    print(f"- ASSUMPTION: Earth's active sand seas cover about {GLOBAL_SAND_SEAS_KM2:,} km2 (order of magnitude). "
          f"The Namib Sand Sea covers about {NAMIB_KM2:,} km2.")
    print("- One client is the single writer of its maps. Wall time is max(compute time, area / client rate / "
          "number of clients). Several clients (one `dunemap map --scheduler ...` per group of scenes) can share "
          "one cluster.\n")
    cols = [f"{n} CPU" for n in args.estimate_workers] + [f"{n} GPU" for n in args.estimate_workers]
    print("| area | km2 | input (int8) | one client's floor | " + " | ".join(cols) + " |")
    print("|---|---:|---:|---:|" + "---:|" * len(cols))
    for name, km2 in (("Namib Sand Sea", NAMIB_KM2), ("all active sand seas", GLOBAL_SAND_SEAS_KM2)):
        px = km2 * PX_PER_KM2
        compute = [px * cpu_s_per_px / n for n in args.estimate_workers]
        compute += [px * gpu_s_per_px / n for n in args.estimate_workers]
        print(f"| {name} | {km2:,} | {px * 64 / 1e9:,.0f} GB | {_hms(px / client_px_per_s)} | "
              + " | ".join(_hms(t) for t in compute) + " |")


if __name__ == "__main__":
    main()
