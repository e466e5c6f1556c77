"""Benchmark whole-raster mapping: the seed's sliding-window design against ``dunemap map``.

Usage::

    python benchmarks/bench_mapping.py [--size 2048] [--model mit_b2] [--work DIR]
                                       [--variant WINDOW:STRIDE:BATCH:PRECISION:BLEND ...]

On a synthetic int8 AEF-like raster (smooth random unit vectors, quantised with
``dunemap.io.aef.quantize``) and one randomly initialised model saved as a checkpoint, it runs

(a) the seed's design: the whole raster read into memory, 512-pixel windows at stride 256, fp32,
    one window at a time, overlapping softmax averaged, and
(b) ``dunemap map`` with its defaults (plus any ``--variant``),

each in a fresh subprocess that reports its own peak RSS, and prints a markdown table of wall
time, km2/s (10 m pixels), peak RSS and pixel agreement with (a). Re-runnable: the raster and
checkpoint are cached in ``--work`` by size and seed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PIXEL_KM2 = 1e-4  # one 10 m pixel


def make_aef_raster(path: Path, size: int, seed: int = 0, tile: int = 512) -> Path:
    """A ``size x size`` int8 AEF-like GeoTIFF: two scales of smooth noise, unit-normalised, quantised."""
    import rasterio
    from affine import Affine

    from dunemap.io.aef import quantize

    rng = np.random.default_rng(seed)
    scales = (64, 8)  # pixels per control point: broad regions and dune-sized texture
    grids = [rng.standard_normal((64, size // s + 3, size // s + 3)).astype(np.float32) for s in scales]
    weights = (1.0, 0.5)
    profile = dict(driver="GTiff", height=size, width=size, count=64, dtype="int8", nodata=-128, tiled=True,
                   blockxsize=512, blockysize=512, compress="deflate", interleave="pixel", crs="EPSG:32733",
                   transform=Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 7_300_000.0))
    tmp = path.with_suffix(".tmp.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        for r0 in range(0, size, tile):
            for c0 in range(0, size, tile):
                h, w = min(tile, size - r0), min(tile, size - c0)
                x = np.zeros((64, h, w), dtype=np.float32)
                for grid, s, wt in zip(grids, scales, weights):
                    x += wt * _bilinear(grid, (np.arange(r0, r0 + h) + 0.5) / s, (np.arange(c0, c0 + w) + 0.5) / s)
                x /= np.linalg.norm(x, axis=0, keepdims=True)
                dst.write(quantize(x), window=rasterio.windows.Window(c0, r0, w, h))
    tmp.rename(path)
    return path


def _bilinear(grid: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    fy, fx = (ys - y0).astype(np.float32)[:, None], (xs - x0).astype(np.float32)[None, :]
    g00, g01 = grid[:, y0][:, :, x0], grid[:, y0][:, :, x0 + 1]
    g10, g11 = grid[:, y0 + 1][:, :, x0], grid[:, y0 + 1][:, :, x0 + 1]
    return (g00 * (1 - fy) * (1 - fx) + g01 * (1 - fy) * fx + g10 * fy * (1 - fx) + g11 * fy * fx).astype(np.float32)


def make_checkpoint(path: Path, model_name: str, seed: int = 0) -> Path:
    import torch

    from dunemap.knowledge.catalog import load_catalog
    from dunemap.models import create_model
    from dunemap.models.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    model = create_model(model_name, num_classes=10, text_dim=512).eval()
    model.set_text(torch.nn.functional.normalize(torch.randn(10, 512), dim=1))
    catalog = load_catalog()
    return save_checkpoint(path, model, list(catalog.names), [tuple(c) for c in catalog.colors])


def seed_design(input_path: str, weights: str, out: str) -> None:
    """The seed's design: read everything, 512 windows at stride 256, fp32, one at a time, average softmax."""
    import rasterio
    import torch

    from dunemap.io.aef import dequantize
    from dunemap.mapping.windows import window_starts
    from dunemap.models.checkpoint import load_predictor

    predictor = load_predictor(weights, precision="fp32")
    with rasterio.open(input_path) as src:
        x, valid = dequantize(src.read())  # (64, H, W) float32 for the whole raster
        profile = src.profile
    _, h, w = x.shape
    k = predictor.num_classes
    acc = np.zeros((k, h, w), dtype=np.float32)
    count = np.zeros((h, w), dtype=np.float32)
    for r in window_starts(h, 512, 256):
        for c in window_starts(w, 512, 256):
            tile = torch.from_numpy(np.ascontiguousarray(x[:, r : r + 512, c : c + 512]))[None]
            probs = torch.softmax(predictor.predict(tile), dim=1)[0].numpy()
            acc[:, r : r + 512, c : c + 512] += probs
            count[r : r + 512, c : c + 512] += 1
    probs = acc / count
    classes = probs.argmax(axis=0).astype(np.uint8)
    classes[~valid] = 255
    top2 = np.sort(probs, axis=0)[-2:]
    margin = (top2[1] - top2[0]).astype(np.float32)  # how decided the seed was at each pixel
    profile.update(count=2, dtype="float32", nodata=None, interleave="band")
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(classes.astype(np.float32), 1)
        dst.write(margin, 2)


def ours(argv: list[str]) -> None:
    from dunemap.cli import main

    code = main(argv)
    if code:
        raise SystemExit(code)


def _child(kind: str, args: list[str]) -> None:
    t0 = time.perf_counter()
    if kind == "_seed":
        seed_design(*args)
    else:
        ours(args)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"seconds": time.perf_counter() - t0, "cpu_seconds": usage.ru_utime + usage.ru_stime,
                      "peak_rss_mib": usage.ru_maxrss / 1024}))


def _run(kind: str, args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, kind, *args], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _agreement(ours_path: Path, seed_path: Path, min_margin: float) -> tuple[float, float]:
    """Pixel agreement with the seed's map, over all pixels and over those the seed decided by ``min_margin``."""
    import rasterio

    with rasterio.open(ours_path) as sa, rasterio.open(seed_path) as sb:
        x, y, margin = sa.read(1), sb.read(1).astype(np.uint8), sb.read(2)
    valid = (x != 255) & (y != 255)
    same = x == y
    confident = valid & (margin >= min_margin)
    return float(same[valid].mean()), float(same[confident].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=2048, help="raster side in pixels (default 2048)")
    parser.add_argument("--model", default="mit_b2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("runs/bench_mapping"))
    parser.add_argument("--skip-seed", action="store_true", help="reuse the seed map from an earlier run")
    parser.add_argument("--margin", type=float, default=0.05,
                        help="also report agreement on pixels where the seed's top-2 probability margin is >= this")
    parser.add_argument("--variant", action="append", default=[],
                        help="also time WINDOW:STRIDE:BATCH:PRECISION:BLEND, e.g. 512:480:4:bf16:gaussian")
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    raster = args.work / f"aef_{args.size}_s{args.seed}.tif"
    weights = args.work / f"{args.model}_s{args.seed}.pth"
    if not raster.exists():
        make_aef_raster(raster, args.size, args.seed)
    if not weights.exists():
        make_checkpoint(weights, args.model, args.seed)
    area = args.size * args.size * PIXEL_KM2

    rows = []
    seed_map = args.work / f"seed_{args.size}_{args.model}.tif"
    if not (args.skip_seed and seed_map.exists()):
        res = _run("_seed", [str(raster), str(weights), str(seed_map)])
        rows.append(("(a) seed: 512/256, fp32, batch 1, averaging", res, (1.0, 1.0)))
    runs = [("(b) dunemap defaults", [])]
    for v in args.variant:
        window, stride, batch, precision, blend = v.split(":")
        runs.append((f"variant {v}", ["--window", window, "--stride", stride, "--batch-size", batch,
                                      "--precision", precision, "--blend", blend]))
    for label, extra in runs:
        out = args.work / f"ours_{len(rows)}.tif"
        res = _run("_ours", ["map", str(raster), "--weights", str(weights), "--out", str(out), "--no-progress",
                             "--no-resume", *extra])
        rows.append((label, res, _agreement(out, seed_map, args.margin)))

    from dunemap.mapping.config import MapConfig
    from dunemap.mapping.windows import window_count

    seed_row = next((r[1] for r in rows if r[0].startswith("(a)")), None)
    d = MapConfig()
    n_seed, n_ours = window_count(args.size, 512, 256) ** 2, window_count(args.size, d.window, d.stride) ** 2
    print(f"\n{args.size}x{args.size} int8 AEF raster ({area:.1f} km2), {args.model} with random weights, "
          f"{os.cpu_count()} CPU(s); windows run: (a) {n_seed}, (b) {n_ours} ({n_seed / n_ours:.2f}x fewer)\n")
    print("| run | wall s | CPU s | km2/s (wall) | km2 per CPU-s | speed-up vs (a), wall / CPU | peak RSS MiB "
          f"| agreement with (a) | agreement where (a) margin >= {args.margin} |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, res, (agree, confident) in rows:
        speed = (f"{seed_row['seconds'] / res['seconds']:.2f}x / {seed_row['cpu_seconds'] / res['cpu_seconds']:.2f}x"
                 if seed_row else "-")
        print(f"| {label} | {res['seconds']:.1f} | {res['cpu_seconds']:.1f} | {area / res['seconds']:.3f} | "
              f"{area / res['cpu_seconds']:.3f} | {speed} | {res['peak_rss_mib']:.0f} | {agree * 100:.2f} % | "
              f"{confident * 100:.2f} % |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("_seed", "_ours"):
        _child(sys.argv[1], sys.argv[2:])
    else:
        main()
