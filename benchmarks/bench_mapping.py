"""Benchmark whole-raster mapping: the seed's sliding-window design against ``dunemap map``.

Usage::

    python benchmarks/bench_mapping.py [--size 2048] [--scene namib|noise] [--weights CHECKPOINT]
                                       [--threads N] [--variant WINDOW:STRIDE:BATCH:PRECISION:BLEND[:THREADS] ...]
                                       [--levers] [--project 8192] [--json PATH]

On an int8 AEF raster (``--scene REGION``: a held-out synthetic scene of ``dunemap.synth`` with
truth labels, written with ``write_scene_geotiff(..., dtype="int8")``; ``--scene noise``: smooth
random unit vectors, no labels) and one checkpoint (``--weights``, e.g. the one
``benchmarks/train_bench_model.py`` trains; without it a randomly initialised model, whose
agreement means little), it runs

(a) the seed's design: the whole raster held in memory as float32, 512-pixel windows at stride
    256, the plain float32 model (NCHW, as published), one window at a time, softmax averaged, and
(b) ``dunemap map`` with its defaults (plus any ``--variant``),

each in a fresh subprocess that reports its wall time, CPU time and peak RSS, and prints a
markdown table of km2/s (10 m pixels), peak RSS, pixel agreement with (a) and, with a scene, each
map's OA and mIoU against the scene's truth. ``--levers`` first times the model-level levers one
at a time on windows of the raster (CPU seconds per megapixel, best of a few interleaved repeats,
and the argmax agreement and largest softmax difference of each with the float32 model).
``--project N`` adds the CPU time each run would take on an N x N raster, scaled by its count of
windows (the seed's design cannot hold such a raster in memory here). The command line, CPU
count, the CPU's model and speed flags (:func:`dunemap.runtime.device.cpu_info`) and load averages go into the output;
everything also goes to ``--json``. Re-runnable: the raster is cached in ``--work`` by scene, size
and seed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from dunemap.mapping.profile import STAGES, seam_index
from dunemap.runtime.device import cpu_info, describe_cpu

PIXEL_KM2 = 1e-4  # one 10 m pixel
SEED_WINDOW, SEED_STRIDE = 512, 256
HELD_OUT_SEED = 10_000  # scene seeds of the training data are small (dunemap.synth.dataset.scene_seed)
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "_weights" / "mit_b2_synth.pth"


def make_noise_raster(path: Path, size: int, seed: int = 0, tile: int = 512) -> Path:
    """A ``size x size`` int8 AEF-like GeoTIFF: two scales of smooth noise, unit-normalised, quantised."""
    import rasterio
    from affine import Affine

    from dunemap.io.aef import quantize

    rng = np.random.default_rng(seed)
    holes = nodata_holes(size, seed)
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
                dst.write(quantize(x, ~holes[r0 : r0 + h, c0 : c0 + w]), window=rasterio.windows.Window(c0, r0, w, h))
    tmp.rename(path)
    return path


def _bilinear(grid: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    fy, fx = (ys - y0).astype(np.float32)[:, None], (xs - x0).astype(np.float32)[None, :]
    g00, g01 = grid[:, y0][:, :, x0], grid[:, y0][:, :, x0 + 1]
    g10, g11 = grid[:, y0 + 1][:, :, x0], grid[:, y0 + 1][:, :, x0 + 1]
    return (g00 * (1 - fy) * (1 - fx) + g01 * (1 - fy) * fx + g10 * fy * (1 - fx) + g11 * fy * fx).astype(np.float32)


def make_scene_raster(image: Path, labels: Path, region: str, size: int, seed: int) -> None:
    """A held-out synthetic scene of ``region`` as an int8 AEF GeoTIFF and its uint8 truth labels."""
    from dunemap.synth.scene import SceneConfig, generate_scene
    from dunemap.synth.writers import write_scene_geotiff

    scene = generate_scene(SceneConfig(size=(size, size), region=region, seed=HELD_OUT_SEED + seed))
    holes = nodata_holes(size, seed)
    scene.valid[holes] = False  # a frozen dataclass: its arrays are changed in place
    scene.label[holes] = 255
    scene.embedding[:, holes] = 0.0
    write_scene_geotiff(scene, image, labels, dtype="int8")


def nodata_holes(size: int, seed: int) -> np.ndarray:
    """(size, size) bool: a few round nodata holes (cloud gaps, tile edges) covering a few per cent of the raster,
    one of them large enough to swallow whole windows."""
    rng = np.random.default_rng(seed + 1)
    yy, xx = np.ogrid[:size, :size]
    holes = np.zeros((size, size), dtype=bool)
    for radius in (size // 6, *(size // 40 for _ in range(12))):
        cy, cx = rng.integers(0, size, 2)
        holes |= (yy - cy) ** 2 + (xx - cx) ** 2 < radius**2
    return holes


def make_random_checkpoint(path: Path, model_name: str, seed: int = 0) -> Path:
    import torch

    from dunemap.knowledge.catalog import load_catalog
    from dunemap.models import create_model
    from dunemap.models.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    model = create_model(model_name, num_classes=10, text_dim=512).eval()
    model.set_text(torch.nn.functional.normalize(torch.randn(10, 512), dim=1))
    catalog = load_catalog()
    return save_checkpoint(path, model, list(catalog.names), [tuple(c) for c in catalog.colors])


def shifted_starts(length: int, offset: int) -> list[int]:
    """The seed's window starts on a grid moved ``offset`` pixels along the axis (plus one window at 0)."""
    from dunemap.raster.geometry import window_starts

    if offset == 0 or length <= SEED_WINDOW + offset:
        return window_starts(length, SEED_WINDOW, SEED_STRIDE)
    return [0] + [offset + s for s in window_starts(length - offset, SEED_WINDOW, SEED_STRIDE)]


def seed_design(input_path: str, weights: str, out: str, offset: str = "0") -> None:
    """The seed's design: the raster in memory as float32, 512 windows at stride 256, plain fp32 model, one at a time.

    ``offset`` moves the window grid (as a raster cropped differently would): how stable the seed's
    own map is under such a shift is the yardstick for agreement with it.
    """
    import rasterio
    import torch

    from dunemap.io.aef import dequantize
    from dunemap.io.atomic import atomic_path
    from dunemap.models.checkpoint import load_checkpoint

    model = load_checkpoint(weights).model.eval()  # float32, NCHW, no autocast: the published inference
    with rasterio.open(input_path) as src:
        profile = src.profile
        x = np.empty((src.count, src.height, src.width), dtype=np.float32)
        valid = np.ones((src.height, src.width), dtype=bool)
        for band in range(src.count):  # band by band, so the peak is the float32 raster, not a copy of it
            x[band : band + 1], v = dequantize(src.read(band + 1)[None])
            valid &= v
    x[:, ~valid] = 0.0
    _, h, w = x.shape
    k = model.config.num_classes
    acc = np.zeros((k, h, w), dtype=np.float32)
    count = np.zeros((h, w), dtype=np.float32)
    with torch.no_grad():
        for r in shifted_starts(h, int(offset)):
            for c in shifted_starts(w, int(offset)):
                tile = torch.from_numpy(np.ascontiguousarray(x[:, r : r + SEED_WINDOW, c : c + SEED_WINDOW]))[None]
                probs = torch.softmax(model(tile), dim=1)[0].numpy()
                acc[:, r : r + SEED_WINDOW, c : c + SEED_WINDOW] += probs
                count[r : r + SEED_WINDOW, c : c + SEED_WINDOW] += 1
    del x
    acc /= count
    classes = acc.argmax(axis=0).astype(np.uint8)
    classes[~valid] = 255
    acc.sort(axis=0)
    margin = acc[-1] - acc[-2]  # how decided the seed was at each pixel (top-2 probability gap)
    profile.update(count=2, dtype="float32", nodata=None, interleave="band", compress="deflate")
    with atomic_path(out) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(classes.astype(np.float32), 1)
        dst.write(margin, 2)


def _child(kind: str, args: list[str]) -> None:
    """Run one design in this (fresh) process and print its costs as the last line of JSON."""
    threads = int(os.environ.get("BENCH_THREADS", "0"))
    if threads:
        import torch

        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    if kind == "_seed":
        seed_design(*args)
    elif kind == "_scene":
        make_scene_raster(Path(args[0]), Path(args[1]), args[2], int(args[3]), int(args[4]))
    else:
        from dunemap.cli import main

        code = main(args)
        if code:
            raise SystemExit(code)
    seconds = time.perf_counter() - t0
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"seconds": seconds,
                      "cpu_seconds": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
                      "peak_rss_mib": max(_own_peak_rss_kib(), kids.ru_maxrss) / 1024}))


def _own_peak_rss_kib() -> int:
    """This process's peak RSS (VmHWM): unlike ``ru_maxrss``, it does not inherit the parent's peak across exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _run(kind: str, args: list[str], threads: int) -> dict:
    env = dict(os.environ, BENCH_THREADS=str(threads))
    load_before = os.getloadavg()[0]
    proc = subprocess.run([sys.executable, __file__, kind, *args], check=False, capture_output=True, text=True,
                          env=env)
    if proc.returncode:
        raise SystemExit(f"{kind} failed:\n{proc.stderr[-3000:]}")
    lines = proc.stdout.strip().splitlines()
    res = json.loads(lines[-1])
    res["stages"] = {ln.split()[0]: float(ln.split()[1]) for ln in lines[:-1]
                     if ln.split() and ln.split()[0] in STAGES and len(ln.split()) == 3}
    res["load_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return res


def compare_maps(ours: Path, seed: Path, truth: Path | None, num_classes: int, min_margin: float, window: int,
                 stride: int) -> dict:
    """Agreement of a class map with the seed's (all valid pixels, and where the seed's margin >= ``min_margin``)
    and, given ``truth``, the map's OA and mIoU against it."""
    import rasterio

    with rasterio.open(ours) as sa, rasterio.open(seed) as sb:
        x, y, margin = sa.read(1).astype(np.uint8), sb.read(1).astype(np.uint8), sb.read(2)
        backend = {k: v for k, v in sa.tags().items() if k.startswith("BACKEND")}  # what the map ran with
    valid = (x != 255) & (y != 255)
    same = x == y
    confident = valid & (margin >= min_margin)
    out = {"agreement": float(same[valid].mean()), "agreement_confident": float(same[confident].mean()),
           "seam_index": seam_index(x, window, stride).index,
           "confident_fraction": float(confident.sum() / max(valid.sum(), 1)), "backend": backend}
    if truth is not None:
        out.update(truth_scores(x, truth, num_classes))
    return out


def truth_scores(classes: np.ndarray, truth: Path, num_classes: int) -> dict:
    import rasterio

    from dunemap.metrics import ConfusionMatrix

    with rasterio.open(truth) as src:
        t = src.read(1)
    cm = ConfusionMatrix(num_classes)
    cm.update(np.where(classes == 255, 255, classes), t)  # map nodata counted as ignore (truth is 255 there too)
    m = cm.compute()
    return {"oa": float(m.oa), "miou": float(m.miou)}


def _read_classes(path: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as src:
        return src.read(1).astype(np.uint8)


def model_levers(raster: Path, weights: Path, windows: int, reps: int, threads: int,
                 compile_model: bool = False) -> list[dict]:
    """Time the model-level levers one at a time on ``windows`` 512-px windows of ``raster`` (one thread each).

    The backends of the issue's lever 3: dynamic int8 quantisation of the Linear layers and, with
    ``compile_model``, torch.compile (its compile time reported, not counted).
    """
    import copy

    import rasterio
    import torch

    from dunemap.io.aef import dequantize
    from dunemap.models.checkpoint import load_checkpoint
    from dunemap.runtime import bf16_supported, cast_autocast_weights

    torch.set_num_threads(threads or 1)
    base = load_checkpoint(weights).model.eval()
    with rasterio.open(raster) as src:
        n = min(windows, (src.height // 512) * (src.width // 512))
        tiles = []
        for i in range(n):
            r, c = divmod(i, src.width // 512)
            q = src.read(window=rasterio.windows.Window(c * 512, r * 512, 512, 512))
            tiles.append(dequantize(q)[0])
    x = torch.from_numpy(np.stack(tiles))  # (n, 64, 512, 512) float32
    cl = torch.channels_last

    def variant(name: str, model, dtype, memory_format, autocast: bool, batch: int):
        def run() -> torch.Tensor:
            outs = []
            with torch.inference_mode():
                for s in range(0, n, batch):
                    xb = x[s : s + batch].to(dtype=dtype, memory_format=memory_format)
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                        outs.append(model(xb).float())
            return torch.cat(outs)
        return name, run

    variants = [
        variant("fp32, NCHW (the seed)", base, torch.float32, torch.contiguous_format, False, 1),
        variant("fp32, channels-last (Predictor fp32)", copy.deepcopy(base).to(memory_format=cl), torch.float32, cl,
                False, 1),
        variant("int8 dynamic quantisation of the Linear layers", torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(base), {torch.nn.Linear}, dtype=torch.qint8), torch.float32, torch.contiguous_format, False, 1),
    ]
    compile_seconds = None
    if compile_model:
        compiled = torch.compile(copy.deepcopy(base), dynamic=False)
        t0 = time.perf_counter()
        with torch.inference_mode():
            compiled(x[:1])
        compile_seconds = time.perf_counter() - t0
        variants.append(variant(f"torch.compile (inductor; compiling took {compile_seconds:.0f} s)", compiled,
                                torch.float32, torch.contiguous_format, False, 1))
    if bf16_supported(torch.device("cpu")):  # emulated bf16 is several times slower than fp32: not worth timing
        ours = cast_autocast_weights(copy.deepcopy(base).to(memory_format=cl))
        variants += [
            variant("bf16 autocast, channels-last", copy.deepcopy(base).to(memory_format=cl), torch.float32, cl, True, 1),
            variant("+ weights cast to bf16 once, input bf16 (Predictor bf16)", ours, torch.bfloat16, cl, True, 1),
        ]
    ref = variants[0][1]()
    ref_p = torch.softmax(ref, 1)
    best = {name: float("inf") for name, _ in variants}
    outs = {}
    for _ in range(reps):
        for name, fn in variants:
            c0 = time.process_time()
            outs[name] = fn()
            best[name] = min(best[name], time.process_time() - c0)
    mpx = n * 512 * 512 / 1e6
    rows = []
    for name, _ in variants:
        out = outs[name]
        rows.append({"lever": name, "cpu_s_per_mpx": best[name] / mpx,
                     "argmax_agreement": float((out.argmax(1) == ref.argmax(1)).float().mean()),
                     "max_prob_diff": float((torch.softmax(out, 1) - ref_p).abs().max())})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=2048, help="raster side in pixels (default 2048)")
    parser.add_argument("--scene", default="namib",
                        help="a region preset for a held-out synthetic scene with truth labels, or 'noise'")
    parser.add_argument("--weights", type=Path, default=None,
                        help=f"checkpoint to map with (default {DEFAULT_WEIGHTS} if present, else random mit_b2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads in every run (default: torch's choice)")
    parser.add_argument("--work", type=Path, default=Path("runs/bench_mapping"))
    parser.add_argument("--skip-seed", action="store_true", help="reuse the seed map and timing of an earlier run")
    parser.add_argument("--remeasure", action="store_true",
                        help="(b) runs map --remeasure: auto times every backend, as a machine's first map does "
                             "(default: it reuses the timings an earlier map kept, as later maps do)")
    parser.add_argument("--no-defaults", action="store_true", help="run only the --variant runs for (b)")
    parser.add_argument("--margin", type=float, default=0.05,
                        help="also report agreement on pixels where the seed's top-2 probability margin is >= this")
    parser.add_argument("--variant", action="append", default=[],
                        help="also time WINDOW:STRIDE:BATCH:PRECISION:BLEND[:THREADS], e.g. 512:448:2:bf16:gaussian "
                             "(THREADS: torch threads of this run, default --threads)")
    parser.add_argument("--shifted-seed", type=int, default=0, metavar="PIXELS",
                        help="also run the seed's design with its window grid moved by PIXELS (e.g. 128): its "
                             "agreement with (a) is how far (a) itself moves when the raster is cropped differently")
    parser.add_argument("--levers", action="store_true", help="time the model-level levers first")
    parser.add_argument("--lever-windows", type=int, default=4)
    parser.add_argument("--compile", action="store_true", help="with --levers, also time torch.compile")
    parser.add_argument("--model", default="mit_b2", help="architecture of the random model used without --weights")
    parser.add_argument("--project", type=int, default=8192, help="also project CPU time to an N x N raster (0: off)")
    parser.add_argument("--json", type=Path, help="write every number here (default WORK/bench_<scene>_<size>.json)")
    args = parser.parse_args()
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *sys.argv[1:]])

    from dunemap.io.atomic import atomic_path
    from dunemap.mapping.config import MapConfig
    from dunemap.raster.geometry import window_count

    args.work.mkdir(parents=True, exist_ok=True)
    truth: Path | None = None
    if args.scene == "noise":
        raster = args.work / f"noise_{args.size}_s{args.seed}.tif"
        if not raster.exists():
            make_noise_raster(raster, args.size, args.seed)
    else:
        raster = args.work / f"{args.scene}_{args.size}_s{args.seed}_emb.tif"
        truth = args.work / f"{args.scene}_{args.size}_s{args.seed}_labels.tif"
        if not (raster.exists() and truth.exists()):
            _run("_scene", [str(raster), str(truth), args.scene, str(args.size), str(args.seed)], args.threads)
    weights = args.weights
    if weights is None and DEFAULT_WEIGHTS.exists():
        weights = DEFAULT_WEIGHTS
    trained = weights is not None
    if weights is None:
        weights = make_random_checkpoint(args.work / f"{args.model}_random.pth", args.model, args.seed)
    area = args.size * args.size * PIXEL_KM2
    num_classes = 10

    report: dict = {"command": command, "size": args.size, "scene": args.scene, "weights": str(weights),
                    "trained_weights": trained, "cpus": os.cpu_count(), "threads": args.threads or "torch default",
                    "platform": platform.platform(), "python": platform.python_version(), "cpu": cpu_info(),
                    "storage": storage(raster), "runs": []}
    import torch

    report["torch"] = torch.__version__
    if args.levers:
        report["levers"] = model_levers(raster, weights, args.lever_windows, 3, args.threads, args.compile)

    seed_map = args.work / f"seed_{args.scene}_{args.size}_s{args.seed}_{weights.stem}.tif"
    seed_json = seed_map.with_suffix(".json")
    if args.skip_seed and seed_map.exists() and seed_json.exists():
        seed_res = json.loads(seed_json.read_text())
    else:
        seed_res = _run("_seed", [str(raster), str(weights), str(seed_map)], args.threads)
        with atomic_path(seed_json) as tmp:
            tmp.write_text(json.dumps(seed_res))
    seed_row = {"label": f"(a) seed: {SEED_WINDOW}/{SEED_STRIDE}, fp32 NCHW, batch 1, averaging", **seed_res,
                "windows": window_count(args.size, SEED_WINDOW, SEED_STRIDE) ** 2,
                "project_windows": window_count(args.project, SEED_WINDOW, SEED_STRIDE) ** 2 if args.project else 0,
                "agreement": 1.0, "agreement_confident": 1.0,
                "seam_index": seam_index(_read_classes(seed_map), SEED_WINDOW, SEED_STRIDE).index}
    if truth is not None:
        seed_row.update(truth_scores(_read_classes(seed_map), truth, num_classes))
    rows = [seed_row]

    if args.shifted_seed:
        shifted = args.work / f"seed_shifted{args.shifted_seed}_{args.size}.tif"
        res = _run("_seed", [str(raster), str(weights), str(shifted), str(args.shifted_seed)], args.threads)
        n_shift = len(shifted_starts(args.size, args.shifted_seed)) ** 2
        rows.append({"label": f"(a') seed's design, window grid moved {args.shifted_seed} px", **res, "windows": n_shift,
                     "project_windows": len(shifted_starts(args.project, args.shifted_seed)) ** 2 if args.project else 0,
                     **compare_maps(shifted, seed_map, truth, num_classes, args.margin, SEED_WINDOW,
                                                  SEED_STRIDE)})

    from dunemap.models.checkpoint import load_checkpoint

    train_tile = load_checkpoint(weights).metrics.get("tile")  # map's default windows follow it
    d = MapConfig().for_model(train_tile)
    runs = []
    if not args.no_defaults:
        tile = f"trained on {train_tile} px tiles" if train_tile else "no training tile recorded"
        label = (f"(b) dunemap's defaults for this checkpoint ({tile}): {d.window}/{d.stride}, "
                 f"batch {d.batch_size}, {d.blend}, precision auto, "
                 f"backend {d.backend}" + (", timings measured again (--remeasure)" if args.remeasure else
                                           ", timings kept from an earlier map where there are any"))
        runs.append((label, d.window, d.stride, [], args.threads))
    for v in args.variant:
        fields = v.split(":")
        if len(fields) not in (5, 6):
            parser.error(f"--variant {v}: expected WINDOW:STRIDE:BATCH:PRECISION:BLEND[:THREADS]")
        window, stride, batch, precision, blend = fields[:5]
        threads = int(fields[5]) if len(fields) == 6 else args.threads
        runs.append((f"variant {v}", int(window), int(stride), ["--window", window, "--stride", stride,
                                                                "--batch-size", batch, "--precision", precision,
                                                                "--blend", blend], threads))
    for i, (label, window, stride, extra, threads) in enumerate(runs):
        out = args.work / f"ours_{i}.tif"
        cli = ["map", str(raster), "--weights", str(weights), "--out", str(out), "--no-progress", "--no-resume",
               "--overwrite", "--profile", *extra, *(["--remeasure"] if args.remeasure else [])]
        if threads:
            cli += ["--threads", str(threads)]
        res = _run("_ours", cli, threads)
        rows.append({"label": label, **res, "windows": window_count(args.size, window, stride) ** 2,
                     "project_windows": window_count(args.project, window, stride) ** 2 if args.project else 0,
                     **compare_maps(out, seed_map, truth, num_classes, args.margin, window, stride)})
    report["runs"] = rows
    print(format_report(report, rows, area, args, seed_row))
    json_path = args.json or args.work / f"bench_{args.scene}_{args.size}.json"
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {json_path}")


def finish_report(report: dict, format_report, path: Path | None) -> None:
    """Record the 1-minute load average after the runs, print ``format_report(report)`` and write ``report`` to
    ``path`` as JSON (the close of the benchmarks that time one thing in several ways)."""
    report["load_1min_after"] = round(os.getloadavg()[0], 2)
    print(format_report(report))
    if path:
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {path}")


def storage(raster: Path) -> str:
    """How the raster stores its pixels (its read cost depends on it): compression, predictor, interleaving, tiles."""
    import rasterio

    with rasterio.open(raster) as src:
        tags = src.tags(ns="IMAGE_STRUCTURE")
        rows, cols = src.block_shapes[0]
        return (f"{tags.get('COMPRESSION', 'uncompressed')}, predictor {tags.get('PREDICTOR', '1')}, "
                f"{tags.get('INTERLEAVE', 'band').lower()}-interleaved, {rows}x{cols} px tiles")


def format_report(report: dict, rows: list[dict], area: float, args: argparse.Namespace, seed: dict) -> str:
    lines = [f"`{report['command']}`", ""]
    what = "held-out synthetic " + args.scene + " scene" if args.scene != "noise" else "smooth-noise"
    weights = "trained weights" if report["trained_weights"] else "RANDOM weights (agreement not meaningful)"
    lines.append(f"{args.size}x{args.size} int8 AEF {what} raster ({area:.1f} km2; {report['storage']}), "
                 f"{Path(report['weights']).name} "
                 f"({weights}), {report['cpus']} CPU(s): {describe_cpu(report['cpu'])}, threads {report['threads']}, "
                 f"torch {report['torch']}; 1-min load average before/after each run in the last column")
    if "levers" in report:
        intro = ("Model-level levers (CPU s per megapixel of window, best of 3 interleaved repeats; agreement "
                 "with the fp32 model's argmax on the same windows):")
        lines += ["", intro, "",
                  "| lever | CPU s / Mpx | speed-up vs seed | argmax agreement | max softmax diff |",
                  "|---|---:|---:|---:|---:|"]
        ref = report["levers"][0]["cpu_s_per_mpx"]
        for lv in report["levers"]:
            lines.append(f"| {lv['lever']} | {lv['cpu_s_per_mpx']:.3f} | {ref / lv['cpu_s_per_mpx']:.2f}x | "
                         f"{lv['argmax_agreement'] * 100:.3f} % | {lv['max_prob_diff']:.4f} |")
    has_truth = "miou" in seed
    proj = f"CPU s at {args.project}^2, projected (speed-up) | " if args.project else ""
    lines += ["", f"| run | windows | wall s | CPU s | km2/s (wall) | km2 per CPU-s | speed-up vs (a), wall / CPU | "
                  f"{proj}peak RSS MiB | agreement with (a) | where (a) margin >= {args.margin} |"
              + (" OA / mIoU vs truth |" if has_truth else "") + " seam index | load |",
              "|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if args.project else "") + "---:|---:|---:|"
              + ("---:|" if has_truth else "") + "---:|---|"]
    for r in rows:
        speed = f"{seed['seconds'] / r['seconds']:.2f}x / {seed['cpu_seconds'] / r['cpu_seconds']:.2f}x"
        projected = ""
        if args.project:
            cpu = r["cpu_seconds"] * r["project_windows"] / r["windows"]
            seed_cpu = seed["cpu_seconds"] * seed["project_windows"] / seed["windows"]
            projected = f"{cpu:.0f} ({seed_cpu / cpu:.2f}x) | "
        truth = f" {r['oa'] * 100:.1f} % / {r['miou']:.3f} |" if has_truth else ""
        lines.append(f"| {r['label']} | {r['windows']} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | "
                     f"{area / r['seconds']:.3f} | {area / r['cpu_seconds']:.3f} | {speed} | {projected}"
                     f"{r['peak_rss_mib']:.0f} | {r['agreement'] * 100:.2f} % | {r['agreement_confident'] * 100:.2f} % |"
                     f"{truth} {r['seam_index']:.2f} | {r['load_1min'][0]} / {r['load_1min'][1]} |")
    profiled = [r for r in rows if r.get("stages")]
    if profiled:
        lines += ["", "Stages of `dunemap map --profile` (seconds; read and decode run in background threads):", "",
                  "| run | " + " | ".join(STAGES) + " | wall | read + decode, % of wall |",
                  "|---|" + "---:|" * (len(STAGES) + 2)]
        for r in profiled:
            share = (r["stages"].get("read", 0) + r["stages"].get("decode", 0)) / r["seconds"] * 100
            lines.append(f"| {r['label']} | " + " | ".join(f"{r['stages'].get(st, 0):.1f}" for st in STAGES)
                         + f" | {r['seconds']:.1f} | {share:.1f} % |")
    for r in rows:  # the backend each map ran with, from its tags (auto's choice, agreement and seconds)
        if r.get("backend"):
            lines.append(f"\n{r['label']}: backend " + ", ".join(f"{k} {v}" for k, v in r["backend"].items()))
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("_seed", "_ours", "_scene"):
        _child(sys.argv[1], sys.argv[2:])
    else:
        main()
