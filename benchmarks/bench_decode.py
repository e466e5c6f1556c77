"""Benchmark the decode and read path of ``dunemap map``: int8 AEF codes to the model's channels-last input.

Usage::

    python benchmarks/bench_decode.py [--windows 512 256] [--block 1280] [--repeats 5] [--rows 1 2 4 8 16]
                                      [--read-size 2048] [--json PATH]

Per window (and per window of a whole block of overlapping windows at the default stride), on random
int8 codes in the reader's layout (``BlockData.data``: band-interleaved (C, H, W), as GDAL returns
it), it times, best of ``--repeats`` interleaved repeats, one thread:

- **baseline**: ONE ``np.take`` of the 256-entry table into a preallocated (h, w, C) buffer from codes
  that are already pixel-interleaved and contiguous: what any look-up decode costs at least;
- **old**: the per-window formula dunemap used before (a transposed view, XOR 0x80, ``np.take``);
- **new**: :func:`dunemap.mapping.decode.decode_window` (float32 and bf16), with its rows per step
  (``--rows``: what :data:`~dunemap.mapping.decode.DECODE_ROWS` was chosen from);
- **GPU path, its CPU part**: gathering the codes pixel-interleaved as int8
  (:func:`~dunemap.mapping.decode.window_codes`), all the CPU does per window when a GPU decodes (its
  ``torch.take`` on the device, :func:`~dunemap.mapping.decode.decode_on_device`, is checked on the CPU);
- **block**: :func:`~dunemap.mapping.decode.window_batch` over every window of a ``--block`` px block at
  the default stride (``dunemap.mapping.config.default_stride``), seconds per window.

Every variant's output is checked equal, bit for bit, to the old formula's. With ``--read-size``, it
also writes a deflate-compressed, tiled int8 raster of that side (smooth noise, like
``bench_mapping.py --scene noise``) and times ``EmbeddingReader.read`` of a block with GDAL's
``GDAL_NUM_THREADS`` at 1 and ALL_CPUS. The CPU's model and speed flags and the 1-minute load
average are printed with the tables; everything also goes to ``--json``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench_mapping import finish_report, make_noise_raster
from dunemap.io.aef import code_table
from dunemap.mapping import decode
from dunemap.mapping.config import default_stride
from dunemap.mapping.decode import decode_on_device, decode_table, decode_window, window_batch, window_codes
from dunemap.raster.geometry import Box, window_starts
from dunemap.raster.reader import BlockData
from dunemap.runtime.device import cpu_info, describe_cpu

CHANNELS = 64


def old_formula(block: np.ndarray, box: Box, dtype: torch.dtype) -> np.ndarray:
    """The decode of one window as ``window_batch`` did it before issue 30: (h, w, C), float32 or bf16 bits."""
    lut = code_table()
    if dtype == torch.bfloat16:
        lut = torch.from_numpy(lut.copy()).to(dtype).view(torch.int16).numpy().view(np.uint16)
    out = np.empty((box.height, box.width, block.shape[0]), dtype=lut.dtype)
    codes = block[:, box.row : box.row_stop, box.col : box.col_stop].transpose(1, 2, 0)  # (h, w, C) view
    np.take(lut, codes.view(np.uint8) ^ np.uint8(0x80), out=out)
    return out


def best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def time_window(block: np.ndarray, window: int, repeats: int, rows_options: list[int]) -> list[dict]:
    """Seconds per ``window`` px window of each variant (best of ``repeats``, variants interleaved)."""
    box = Box(0, 0, window, window)
    crop = block[:, :window, :window]
    pixel = np.ascontiguousarray(crop.view(np.uint8).transpose(1, 2, 0))  # (h, w, C) code bits, contiguous
    table32 = decode_table(torch.float32)
    out = np.empty((window, window, CHANNELS), dtype=np.float32)
    out16 = np.empty((window, window, CHANNELS), dtype=np.uint16)
    data = BlockData(box, crop, np.ones((window, window), dtype=bool))
    variants = {
        "baseline: one np.take from pixel-interleaved codes (float32)": lambda: np.take(table32, pixel, out=out),
        "old: transposed view, XOR, np.take (float32)": lambda: old_formula(block, box, torch.float32),
        "old: the same, bf16": lambda: old_formula(block, box, torch.bfloat16),
    }
    for rows in rows_options:
        def new(rows=rows, dtype=torch.float32, buf=out):
            decode.DECODE_ROWS = rows
            decode_window(crop, decode_table(dtype), buf)
        variants[f"new: decode_window, {rows} rows a step (float32)"] = new
        variants[f"new: decode_window, {rows} rows a step, bf16"] = lambda new=new: new(dtype=torch.bfloat16,
                                                                                          buf=out16)
    variants["GPU path, its CPU part: codes gathered pixel-interleaved (window_codes)"] = \
        lambda: window_codes(data, [box])
    default_rows = decode.DECODE_ROWS
    best = dict.fromkeys(variants, float("inf"))
    try:
        for _ in range(repeats):
            for name, fn in variants.items():
                best[name] = min(best[name], best_of(fn, 1))
    finally:
        decode.DECODE_ROWS = default_rows
    check_equal(block, box, data)
    base = best[next(iter(variants))]
    return [{"window": window, "variant": name, "ms_per_window": s * 1e3, "vs_baseline": s / base,
             "ns_per_code": s / (window * window * CHANNELS) * 1e9} for name, s in best.items()]


def check_equal(block: np.ndarray, box: Box, data: BlockData) -> None:
    """Every path gives the old formula's values, bit for bit (float32 and bf16)."""
    for dtype in (torch.float32, torch.bfloat16):
        want = torch.from_numpy(old_formula(block, box, dtype)).view(dtype)
        for got in (window_batch(data, [box], dtype)[0].permute(1, 2, 0),
                    decode_on_device(window_codes(data, [box]), dtype, "cpu")[0].permute(1, 2, 0)):
            if not torch.equal(got.view(torch.int16 if dtype == torch.bfloat16 else torch.int32),
                               want.view(torch.int16 if dtype == torch.bfloat16 else torch.int32)):
                raise SystemExit(f"decoded values differ from the old formula's ({dtype})")


def time_block(block: np.ndarray, window: int, repeats: int) -> dict:
    """``window_batch`` over all windows of the block at the default stride, one window a batch."""
    side = block.shape[1]
    stride = default_stride(window)
    starts = window_starts(side, window, stride)
    windows = [Box(r, c, window, window) for r in starts for c in starts]
    data = BlockData(Box(0, 0, side, side), block, np.ones((side, side), dtype=bool))

    def run(dtype: torch.dtype) -> None:
        for win in windows:
            window_batch(data, [win], dtype)

    def run_old() -> None:
        for win in windows:
            old_formula(block, win, torch.float32)

    s32, s16, old = (best_of(lambda: run(torch.float32), repeats), best_of(lambda: run(torch.bfloat16), repeats),
                     best_of(run_old, repeats))
    return {"window": window, "stride": stride, "block": side, "windows": len(windows),
            "ms_per_window_float32": s32 / len(windows) * 1e3, "ms_per_window_bf16": s16 / len(windows) * 1e3,
            "ms_per_window_old_float32": old / len(windows) * 1e3,
            "decoded_codes_per_block_code": len(windows) * window * window / side**2}


def time_reads(size: int, block: int, repeats: int, work: Path) -> list[dict]:
    """Seconds to read a ``block`` px block of a deflate int8 raster with GDAL_NUM_THREADS 1 and ALL_CPUS."""
    import rasterio

    from dunemap.mapping.predict import GDAL_READ_CACHE_BYTES
    from dunemap.raster.reader import EmbeddingReader

    raster = work / f"noise_{size}.tif"
    if not raster.exists():
        make_noise_raster(raster, size)
    box = Box(0, 0, min(block, size), min(block, size))
    out = []
    best = {"1": float("inf"), "ALL_CPUS": float("inf")}
    for _ in range(repeats):
        for threads in best:  # a fresh reader each time: no GDAL block cache carried over
            with rasterio.Env(GDAL_CACHEMAX=GDAL_READ_CACHE_BYTES, GDAL_NUM_THREADS=threads), \
                    EmbeddingReader(raster) as reader:
                t0 = time.perf_counter()
                reader.read(box)
                best[threads] = min(best[threads], time.perf_counter() - t0)
    for threads, s in best.items():
        out.append({"GDAL_NUM_THREADS": threads, "block": box.height, "seconds": s})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, nargs="+", default=[512, 256],
                        help="window sides to time (default 512, the fallback window, and 256, the tile the "
                             "benchmark model is trained on)")
    parser.add_argument("--block", type=int, default=1280, help="side of the block of overlapping windows (px)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="rows a step to time")
    parser.add_argument("--read-size", type=int, default=0, help="also time GDAL reads of a raster of this side")
    parser.add_argument("--work", type=Path, default=None, help="folder for the read raster (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cpu = cpu_info()
    report = {"command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *sys.argv[1:]]), "cpu": cpu,
              "cpus": os.cpu_count(), "load_1min_before": round(os.getloadavg()[0], 2)}
    rng = np.random.default_rng(0)
    block = rng.integers(-128, 128, (CHANNELS, args.block, args.block), dtype=np.int8)  # -128: nodata
    report["windows"] = [row for w in args.windows for row in time_window(block, w, args.repeats, args.rows)]
    report["blocks"] = [time_block(block, w, max(1, args.repeats // 2)) for w in args.windows if w <= args.block]
    if args.read_size:
        with tempfile.TemporaryDirectory() as tmp:
            work = args.work or Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            report["reads"] = time_reads(args.read_size, args.block, args.repeats, work)
    finish_report(report, format_report, args.json)


def format_report(report: dict) -> str:
    lines = [f"`{report['command']}`", "",
             f"{report['cpus']} CPU(s): {describe_cpu(report['cpu'])}; one thread; 1-min load average "
             f"{report['load_1min_before']} before, {report['load_1min_after']} after", "",
             "| window | variant | ms / window | vs baseline | ns / code |", "|---:|---|---:|---:|---:|"]
    for r in report["windows"]:
        lines.append(f"| {r['window']} | {r['variant']} | {r['ms_per_window']:.1f} | {r['vs_baseline']:.2f}x | "
                     f"{r['ns_per_code']:.2f} |")
    lines += ["", "Every window of a block at the default stride, one window a batch (window_batch):", "",
              "| window / stride | block | windows | ms / window float32 | bf16 | old float32 | codes decoded per "
              "block code |", "|---|---:|---:|---:|---:|---:|---:|"]
    for b in report["blocks"]:
        lines.append(f"| {b['window']} / {b['stride']} | {b['block']} | {b['windows']} | "
                     f"{b['ms_per_window_float32']:.1f} | {b['ms_per_window_bf16']:.1f} | "
                     f"{b['ms_per_window_old_float32']:.1f} | {b['decoded_codes_per_block_code']:.2f} |")
    if "reads" in report:
        lines += ["", "EmbeddingReader.read of one block of a deflate, tiled int8 raster (best of repeats):", "",
                  "| GDAL_NUM_THREADS | block | seconds |", "|---|---:|---:|"]
        for r in report["reads"]:
            lines.append(f"| {r['GDAL_NUM_THREADS']} | {r['block']} | {r['seconds']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
