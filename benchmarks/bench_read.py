"""Benchmark what reading a map's blocks costs, by how the raster is stored and how GDAL reads it.

Usage::

    python benchmarks/bench_read.py [--raster EMB.tif | --size 2048] [--window 128] [--repeats 2] [--json PATH]

The raster (``--raster``, e.g. ``bench_mapping.py``'s synthetic scene; else a smooth-noise int8 raster of
``--size`` px, ``bench_mapping.make_noise_raster``) is copied pixel-interleaved in 256 px tiles, horizontal
differencing before either codec, once in DEFLATE and once in ZSTD level 1
(:func:`dunemap.io.formats.embedding_creation`, what dunemap writes). For each copy it reads every block of the
map ``dunemap map`` would plan for ``--window`` px windows at their default stride (``MapConfig``'s automatic block
size) with a fresh :class:`~dunemap.raster.reader.EmbeddingReader`, under the map's GDAL settings
(:func:`dunemap.mapping.predict.read_env`: GDAL's threads on every core), through GDAL's block cache and past it
(``direct``, what a map does with a local GeoTIFF); best of ``--repeats``, the settings interleaved. It reports
the file's size, wall and CPU seconds (this process, GDAL's threads included) and the codes decoded per CPU
second, and checks that every read gives the same codes and valid pixels. The CPU and the 1-minute load average
are printed with the table; everything also goes to ``--json``.
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
import rasterio
import rasterio.shutil

from bench_mapping import finish_report, make_noise_raster
from dunemap.io.formats import embedding_creation
from dunemap.mapping.config import MapConfig
from dunemap.mapping.engine import plan_map
from dunemap.mapping.predict import read_env
from dunemap.raster.reader import EmbeddingReader
from dunemap.runtime.device import cpu_info, describe_cpu

CODECS = ("deflate", "zstd")


def storage_copy(raster: Path, codec: str, out: Path) -> Path:
    """``raster`` copied as dunemap writes embeddings (:func:`embedding_creation`) but in ``codec``."""
    with rasterio.open(raster) as src:
        options = {k: v for k, v in embedding_creation(src.dtypes[0]).items() if k not in ("driver", "dtype")}
    if codec != "zstd":
        options = {k: v for k, v in options.items() if k != "zstd_level"}
    rasterio.shutil.copy(raster, out, driver="GTiff", **{**options, "compress": codec}, num_threads="ALL_CPUS")
    return out


def read_all(raster: Path, window: int, direct: bool) -> tuple[float, float, int, str]:
    """Wall and CPU seconds (this process, GDAL's threads included) of the reads of every block of the map of
    ``raster`` (a fresh reader, opened by the first read as a map's is), the codes read, and a digest of the
    blocks' codes and valid pixels, taken outside the timed reads."""
    import hashlib

    digest = hashlib.sha256()
    codes, wall, cpu = 0, 0.0, 0.0
    with read_env(direct=direct), EmbeddingReader(raster) as reader:
        plan = plan_map(reader, MapConfig(window=window, progress=False).for_model(window))
        for block in plan.blocks:
            if block.extent is None:
                continue
            w0, c0 = time.perf_counter(), time.process_time()
            data = reader.read(block.extent)
            wall, cpu = wall + time.perf_counter() - w0, cpu + time.process_time() - c0
            codes += data.data.size
            digest.update(data.data.tobytes())
            digest.update(np.packbits(data.valid).tobytes())
    return wall, cpu, codes, digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raster", type=Path, default=None, help="an int8 embedding raster to copy and read")
    parser.add_argument("--size", type=int, default=2048, help="side of the noise raster made without --raster")
    parser.add_argument("--window", type=int, default=128, help="the map's window (px); default stride and blocks")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None, help="folder for the copies (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    report: dict = {"command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *sys.argv[1:]]),
                    "cpu": cpu_info(), "cpus": os.cpu_count(), "load_1min_before": round(os.getloadavg()[0], 2),
                    "window": args.window, "reads": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        raster = args.raster or make_noise_raster(work / f"noise_{args.size}.tif", args.size)
        with rasterio.open(raster) as src:
            report["raster"] = {"path": str(raster), "height": src.height, "width": src.width, "dtype": src.dtypes[0]}
        copies = {codec: storage_copy(raster, codec, work / f"read_{codec}.tif") for codec in CODECS}
        best: dict[tuple[str, bool], list[float]] = {}
        digests = set()
        for _ in range(args.repeats):
            for codec, path in copies.items():
                for direct in (False, True):
                    wall, cpu, codes, digest = read_all(path, args.window, direct)
                    digests.add(digest)
                    old = best.get((codec, direct))
                    if old is None or cpu < old[1]:
                        best[(codec, direct)] = [wall, cpu, codes]
        if len(digests) != 1:
            raise SystemExit("the reads differ: some storage or setting gave other codes")
        for (codec, direct), (wall, cpu, codes) in best.items():
            report["reads"].append({"codec": codec, "direct": direct, "bytes": copies[codec].stat().st_size,
                                    "wall_seconds": wall, "cpu_seconds": cpu, "codes": codes,
                                    "codes_per_cpu_second": codes / max(cpu, 1e-9)})
    finish_report(report, format_report, args.json)


def format_report(report: dict) -> str:
    r = report["raster"]
    lines = [f"`{report['command']}`", "",
             f"{r['height']}x{r['width']} {r['dtype']} raster ({r['path']}), every block of its map at "
             f"{report['window']} px windows; {report['cpus']} CPU(s): {describe_cpu(report['cpu'])}; "
             f"1-min load average {report['load_1min_before']} before, {report['load_1min_after']} after", "",
             "| codec (pixel-interleaved, predictor 2) | GDAL block cache | MB on disk | wall s | CPU s | "
             "M codes per CPU s |", "|---|---|---:|---:|---:|---:|"]
    for row in report["reads"]:
        lines.append(f"| {row['codec']} | {'past it (direct)' if row['direct'] else 'through it'} | "
                     f"{row['bytes'] / 1e6:.1f} | {row['wall_seconds']:.2f} | {row['cpu_seconds']:.2f} | "
                     f"{row['codes_per_cpu_second'] / 1e6:.0f} |")
    lines += ["", "Every read gave the same codes and valid pixels."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
