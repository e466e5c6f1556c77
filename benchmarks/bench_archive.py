"""Benchmark ``dunemap map --index``: a desert mapped straight from an AEF-format archive, on disk and over HTTP.

Usage::

    python benchmarks/bench_archive.py [--work runs/bench_archive] [--tile 2048] [--rows 1 2] [--model mit_b0]
                                       [--threads 2] [--precision auto] [--backend auto] [--window 0] [--stride 0]
                                       [--block-size 0]

The archive is synthetic and built once in ``--work``: int8 COG tiles of ``--tile`` px stored bottom-up, as the
public ones (8192 px), in two UTM zones (33S and 34S, a column of ``max(--rows)`` tiles each side of the 18°E
meridian at 24°S), with a GeoParquet index; each tile holds smooth random unit vectors, quantised. The model is a
randomly initialised ``--model`` checkpoint (bench_dask.py's; speed does not depend on the weights). For each
archive size in ``--rows`` (the bbox covers that many tiles north-south in each zone), each in its own subprocess:

* ``disk``: ``dunemap map --index INDEX --bbox ... --out DESERT`` on the local archive;
* ``http``: the same with the index and tiles served by a loopback HTTP server that honours Range requests and
  counts the bytes it sends (tests/acquire/aef_archive_helpers.py);
* ``geotiff``: ``dunemap map ONE.tif`` on one local north-up int8 GeoTIFF with as many pixels as the zone maps
  of the archive runs together (the same ground cost, read from one file).

Whole-process figures come from ``os.wait4`` (peak RSS, user + system CPU seconds, blocks written) and a wall clock.
Each child gets an empty TMPDIR, checked empty afterwards, and its output folder is listed. Bytes served are
compared with the int8 bytes (64 per pixel) of the ground mapped and of the zone maps' extents (ground plus
context), and with the compressed bytes of the COG blocks those extents touch. Prints markdown tables and an
estimate of wall time for two deserts from the measured rates; ``--json`` writes every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "acquire"))  # the AEF archive helpers of the tests
from aef_archive_helpers import RES, index_row, serve, write_int8_cog  # noqa: E402
from bench_dask import make_checkpoint  # noqa: E402  (a randomly initialised model, as bench_dask.py's)

BANDS = 64
YEAR = 2023
LAT = -24.0  # the 33S / 34S boundary is the 18°E meridian
DESERTS_KM2 = {"Namib Sand Sea": 34_000, "Rub' al Khali": 650_000}
KM2_PER_PX = RES * RES / 1e6


def smooth_codes(height: int, width: int, seed: int, block: int = 512) -> np.ndarray:
    """(64, height, width) int8 AEF codes of smooth random unit vectors (two scales), made block by block.

    A raster smaller than ``block`` both ways is one block of its own size (the smoke test's small tiles): the
    coarse grids are then drawn and interpolated at that size, not at 512 px to be cut down."""
    from scipy.ndimage import zoom

    from dunemap.io.aef import quantize

    rng = np.random.default_rng(seed)
    block = min(block, max(height, width))
    out = np.empty((BANDS, height, width), dtype=np.int8)
    for r in range(0, height, block):
        for c in range(0, width, block):
            h, w = min(block, height - r), min(block, width - c)
            x = np.zeros((BANDS, h, w), dtype=np.float32)
            for step, weight in ((64, 1.0), (8, 0.5)):  # broad regions and dune-sized texture
                coarse = rng.standard_normal((BANDS, block // step + 1, block // step + 1)).astype(np.float32)
                x += weight * zoom(coarse, (1, step, step), order=1)[:, :h, :w]
            x /= np.linalg.norm(x, axis=0, keepdims=True)
            out[:, r:r + h, c:c + w] = quantize(x)
    return out


def utm(epsg: int):
    from pyproj import Transformer

    return (Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True),
            Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True))


def layout(tile: int, rows: int) -> dict:
    """Where the tiles lie: zone 33S's column reaches a quarter tile east of 18°E, zone 34S's a quarter tile west."""
    span = tile * RES
    origins = {}
    for epsg, west_share in ((32733, 0.75), (32734, 0.25)):
        x, y = utm(epsg)[0].transform(18.0, LAT)
        x0 = round((x - west_share * span) / RES) * RES
        y0 = round(y / RES) * RES
        origins[epsg] = [(x0, y0 + j * span) for j in range(rows)]
    return origins


def bbox_for(tile: int, rows: int) -> tuple[float, float, float, float]:
    """A WGS84 box inside both zones' columns of ``rows`` tiles: 0.7 tile each side of 18°E, 2 % in from the ends."""
    span = tile * RES
    pts = []
    for epsg, share in ((32733, -0.7), (32734, 0.7)):
        x, y = utm(epsg)[0].transform(18.0, LAT)
        to_wgs = utm(epsg)[1]
        pts.append([to_wgs.transform(x + share * span, y + f * rows * span) for f in (0.02, 0.98)])
    west = max(p[0] for p in pts[0])
    east = min(p[0] for p in pts[1])
    south = max(pts[0][0][1], pts[1][0][1])
    north = min(pts[0][1][1], pts[1][1][1])
    return west, south, east, north


def build_archive(root: Path, tile: int, rows: int) -> Path:
    """The int8 COG tiles (bottom-up, COG blocks 512 px, deflate, overviews) and their index, built once."""
    import pandas as pd

    index = root / "aef_index.parquet"
    if index.exists():
        return index
    records = []
    for epsg, origins in layout(tile, rows).items():
        for j, (x0, y0) in enumerate(origins):
            rel = f"{YEAR}/{epsg % 100}S/t{j}.tiff"
            write_int8_cog(root / rel, smooth_codes(tile, tile, seed=epsg * 10 + j), epsg, x0, y0, blocksize=512)
            records.append(index_row(rel, epsg, x0, y0, YEAR, tile))
    pd.DataFrame(records).to_parquet(index)
    return index


def write_geotiff(path: Path, pixels: int, tile: int) -> Path:
    """One north-up int8 GeoTIFF (512 px blocks, deflate) of ``tile`` rows and ``pixels / tile`` columns."""
    import rasterio
    from affine import Affine

    if path.exists():
        return path
    width = max(16, int(round(pixels / tile)))
    tmp = path.with_suffix(".tmp.tif")
    with rasterio.open(tmp, "w", driver="GTiff", height=tile, width=width, count=BANDS, dtype="int8", nodata=-128,
                       tiled=True, blockxsize=512, blockysize=512, compress="deflate", crs="EPSG:32733",
                       transform=Affine(RES, 0, 500_000.0, 0, -RES, 7_400_000.0)) as dst:
        for c in range(0, width, 2048):
            w = min(2048, width - c)
            dst.write(smooth_codes(tile, w, seed=c), window=rasterio.windows.Window(c, 0, w, tile))
    tmp.rename(path)
    return path


def run_measured(command: list[str], env: dict, log: Path) -> dict:
    """Run ``command`` as a child; its wall seconds and its own rusage (peak RSS, CPU, blocks written)."""
    with open(log, "w") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text()
    if proc.returncode != 0:
        raise SystemExit(f"{shlex.join(command)} failed ({proc.returncode}):\n{text[-3000:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mib": usage.ru_maxrss / 1024,
            "written_mib": usage.ru_oublock * 512 / 2**20, "log": text}


def maps_of(folder: Path) -> tuple[int, int]:
    """(pixels with a class, pixels in the maps' extents) of the class maps in ``folder`` (or one map)."""
    import rasterio

    paths = [folder] if folder.is_file() else sorted(folder.glob("utm*.tif"))
    mapped = extent = 0
    for p in paths:
        with rasterio.open(p) as ds:
            extent += ds.width * ds.height
            for _, window in ds.block_windows(1):
                mapped += int(np.count_nonzero(ds.read(1, window=window) != 255))
    return mapped, extent


def compressed_bytes_read(root: Path, folder: Path) -> int:
    """Compressed bytes of the full-resolution COG blocks that the zone maps' extents touch."""
    import rasterio

    maps = {}
    for p in sorted(folder.glob("utm*.tif")):
        with rasterio.open(p) as ds:
            maps[ds.crs.to_epsg()] = ds.bounds
    total = 0
    for path in sorted(root.glob(f"{YEAR}/*/*.tiff")):
        with rasterio.open(path) as ds:
            b = maps.get(ds.crs.to_epsg())
            if b is None:
                continue
            t = ds.transform  # stored bottom-up: t.e > 0, rows counted from the south
            cols = sorted(((b.left - t.c) / t.a, (b.right - t.c) / t.a))
            rows = sorted(((b.bottom - t.f) / t.e, (b.top - t.f) / t.e))
            c0, c1 = max(0, int(np.floor(cols[0]))), min(ds.width, int(np.ceil(cols[1])))
            r0, r1 = max(0, int(np.floor(rows[0]))), min(ds.height, int(np.ceil(rows[1])))
            if c0 >= c1 or r0 >= r1:
                continue
            bh, bw = ds.block_shapes[0]
            total += sum(ds.block_size(1, i, j) for i in range(r0 // bh, (r1 - 1) // bh + 1)
                         for j in range(c0 // bw, (c1 - 1) // bw + 1))
    return total


STAGES = ("read", "decode", "model", "blend", "assemble", "write", "wall")


def profile_seconds(log: str) -> dict[str, float]:
    """The ``--profile`` seconds per stage the run printed, summed over its maps (one per zone)."""
    seconds = dict.fromkeys(STAGES, 0.0)
    for line in log.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in seconds:
            try:
                seconds[parts[0]] += float(parts[1])
            except ValueError:
                pass
    return seconds


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("runs/bench_archive"))
    ap.add_argument("--tile", type=int, default=2048, help="tile side in pixels (the public tiles: 8192)")
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 2], help="archive sizes: tiles north-south per zone")
    ap.add_argument("--model", default="mit_b0")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--backend", default="auto", help="dunemap map --backend (default auto; name one to compare "
                    "memory across sizes with the same backend)")
    ap.add_argument("--window", type=int, default=0)
    ap.add_argument("--stride", type=int, default=0)
    ap.add_argument("--block-size", type=int, default=0)
    ap.add_argument("--routes", nargs="+", default=["disk", "http", "geotiff"], choices=["disk", "http", "geotiff"])
    ap.add_argument("--dask-workers", type=int, nargs="+", default=[8, 64], help="machines of the Dask estimates")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--tables", type=Path, default=None, metavar="REPORT.json",
                    help="print the tables of an earlier run's --json report (with these --dask-workers) and stop")
    args = ap.parse_args(argv)
    if args.tables:
        report = json.loads(args.tables.read_text())
        print_tables(report, args.dask_workers)
        return report

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    archive = work / f"archive_{args.tile}_{max(args.rows)}"
    index = build_archive(archive, args.tile, max(args.rows))
    weights = work / f"{args.model}.pth"
    if not weights.exists():
        make_checkpoint(weights, args.model, 0)
    options = ["--weights", str(weights), "--threads", str(args.threads), "--precision", args.precision,
               "--backend", args.backend,
               "--window", str(args.window), "--stride", str(args.stride), "--block-size", str(args.block_size),
               "--no-progress", "--profile", "--overwrite"]
    base_env = {**os.environ, "PYTHONPATH": str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1", "TQDM_DISABLE": "1"}
    runs = []
    for rows in args.rows:
        bbox = [f"{v:.6f}" for v in bbox_for(args.tile, rows)]
        extent_px = None
        for route in args.routes:
            out = work / "out" / f"{route}_{rows}"
            tmpdir = Path(tempfile.mkdtemp(prefix=f"tmp_{route}_{rows}_", dir=work))
            env = {**base_env, "TMPDIR": str(tmpdir)}
            served: dict = {}
            if route == "geotiff":
                if extent_px is None:
                    raise SystemExit("--routes geotiff needs disk or http first (its size is their maps' extent)")
                src = write_geotiff(work / f"geotiff_{args.tile}_{extent_px}.tif", extent_px, args.tile)
                command = [sys.executable, "-m", "dunemap", "map", str(src), "--out", str(out / "map.tif"),
                           *options]
                out.mkdir(parents=True, exist_ok=True)
                result = run_measured(command, env, work / f"{route}_{rows}.log")
            else:
                command_of = lambda idx: [sys.executable, "-m", "dunemap", "map", "--index", idx, "--bbox",  # noqa: E731
                                          *bbox, "--year", str(YEAR), "--out", str(out), *options]
                if route == "http":
                    with serve(archive) as (url, served):
                        command = command_of(f"{url}/aef_index.parquet")
                        result = run_measured(command, env, work / f"{route}_{rows}.log")
                else:
                    command = command_of(str(index))
                    result = run_measured(command, env, work / f"{route}_{rows}.log")
            mapped, extent = maps_of(out / "map.tif" if route == "geotiff" else out)
            if route != "geotiff":
                extent_px = extent if extent_px is None else extent_px
            row = {"rows": rows, "route": route, "mapped_px": mapped, "extent_px": extent, "tiles": 2 * rows,
                   "archive_gib": sum(p.stat().st_size for p in archive.rglob("*.tiff")) / 2**30,
                   "command": shlex.join(["python", "-m", "dunemap", *command[3:]]),
                   "outputs": sorted(str(p.relative_to(out)) for p in out.rglob("*")),
                   "tmp_left": sorted(str(p.relative_to(tmpdir)) for p in tmpdir.rglob("*")),
                   "outputs_mib": sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20,
                   "profile": profile_seconds(result.pop("log")), "load_1min": os.getloadavg()[0], **result}
            if not row["tmp_left"]:
                tmpdir.rmdir()
            if route == "http":
                tiles_served = {k: v for k, v in served.items() if k.endswith(".tiff")}
                row.update(served_bytes=sum(tiles_served.values()), index_bytes=served.get("aef_index.parquet", 0),
                           requests=len(served.get("_status", [])),
                           blocks_bytes=compressed_bytes_read(archive, out))
            runs.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "outputs"}), flush=True)
    report = {"machine": machine(), "threads": args.threads, "model": args.model, "tile": args.tile, "runs": runs,
              "command": shlex.join(["python", "benchmarks/bench_archive.py", *(argv or sys.argv[1:])])}
    print_tables(report, args.dask_workers)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return report


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__}, Python {platform.python_version()}"


def print_tables(report: dict, dask_workers: list[int]) -> None:
    runs = report["runs"]
    print(f"\n## Mapping from the AEF archive: {report['model']}, {report['tile']} px tiles, "
          f"{report['threads']} torch threads\n\nMachine: {report['machine']}\n")
    print("| archive | route | ground km² | extent km² | wall s | CPU s | wall s/km² | CPU s/km² | "
          "peak RSS MiB | written MiB | 1-min load |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        km2 = r["mapped_px"] * KM2_PER_PX
        print(f"| {r['tiles']} tiles, {r['archive_gib']:.2f} GiB | {r['route']} | {km2:.1f} | "
              f"{r['extent_px'] * KM2_PER_PX:.1f} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['wall_s'] / km2:.3f} | "
              f"{r['cpu_s'] / km2:.3f} | {r['peak_rss_mib']:.0f} | {r['written_mib']:.1f} | {r['load_1min']:.2f} |")
    print("\n| archive | route / geotiff, wall per km² of ground | CPU per km² of ground | wall per km² of extent "
          "| CPU per km² of extent |")
    print("|---|---:|---:|---:|---:|")
    for rows in sorted({r["rows"] for r in runs}):
        mine = {r["route"]: r for r in runs if r["rows"] == rows}
        ref = mine.get("geotiff")
        for route in ("disk", "http"):
            r = mine.get(route)
            if r is None or ref is None:
                continue
            g, e = r["mapped_px"] / ref["mapped_px"], r["extent_px"] / ref["extent_px"]
            print(f"| {r['tiles']} tiles | {route}: {r['wall_s'] / ref['wall_s'] / g:.3f} | "
                  f"{r['cpu_s'] / ref['cpu_s'] / g:.3f} | {r['wall_s'] / ref['wall_s'] / e:.3f} | "
                  f"{r['cpu_s'] / ref['cpu_s'] / e:.3f} |")
    http = [r for r in runs if r["route"] == "http"]
    if http:
        print("\n| archive | bytes served (tiles) | GET requests | / int8 bytes of ground | / int8 bytes of extent | "
              "/ compressed bytes of the blocks the extent touches | index bytes |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for r in http:
            sent = r["served_bytes"]
            print(f"| {r['tiles']} tiles | {sent / 2**20:.1f} MiB | {r['requests']} | "
                  f"{sent / (BANDS * r['mapped_px']):.3f} | {sent / (BANDS * r['extent_px']):.3f} "
                  f"| {sent / max(1, r['blocks_bytes']):.3f} | {r['index_bytes']} |")
    print("\nOutputs and temporary files:")
    for r in runs:
        print(f"- {r['route']} {r['tiles']} tiles: output {r['outputs']} ({r['outputs_mib']:.1f} MiB), "
              f"TMPDIR left {r['tmp_left'] or 'empty'}, written by the process {r['written_mib']:.1f} MiB")
    print("\nProfiles (--profile, seconds per stage summed over a run's maps):")
    for r in runs:
        print(f"- {r['route']} {r['tiles']} tiles: " + ", ".join(f"{k} {v:.1f} s" for k, v in r["profile"].items()))
    largest = max(r["rows"] for r in runs)
    print(f"\nEstimated wall time from the {2 * largest}-tile runs' wall seconds per km² of ground, linear in area; "
          f"on N machines the rate times N (an assumption: block tasks spread evenly over N Dask workers, each a "
          f"whole machine like this one, the client assembling fast enough); the GPU is UNMEASURED:\n")
    print("| desert | km² | route | 1 machine (2 cores) | " + " | ".join(f"{n} machines" for n in dask_workers)
          + " | 1 GPU |")
    print("|---|---:|---|---:|" + "---:|" * len(dask_workers) + "---|")
    for name, km2 in DESERTS_KM2.items():
        for r in (r for r in runs if r["rows"] == largest):
            seconds = r["wall_s"] / (r["mapped_px"] * KM2_PER_PX) * km2
            print(f"| {name} | {km2:,} | {r['route']} | {hours(seconds)} | "
                  + " | ".join(hours(seconds / n) for n in dask_workers) + " | UNMEASURED |")


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


if __name__ == "__main__":
    main()
