"""Train one demo-sized recipe and score it on four held-out scenes (issue 11: maps that hold on new ground).

The training data is the demo's synthetic dataset (five regions, whole scenes held out for val/test);
the held-out scenes are generated from seeds no training scene uses (namib 1024 px = the demo's own,
namib 768, qaidam 768, mojave 768), stored as AEF int8 and mapped with 128 px windows, stride 96.
It prints one JSON line per run (per-scene mIoU, their mean, the mIoU of the four scenes pooled, CPU
and wall time, 1-minute load) and appends it to ``WORK/results.jsonl``.

Usage: ``python benchmarks/bench_heldout.py WORK NAME SCENES_PER_REGION SCENE_SIZE ['{"augment": "spectral"}']``
(the JSON holds TrainConfig fields; defaults are the demo's recipe without calibration), or
``python benchmarks/bench_heldout.py WORK NAME --score-only WEIGHTS [WEIGHTS ...] [--tta d8] [--stride 64]`` to score a
trained model (several weights: their ensemble, the mean of their class probabilities, then each member alone and the
share of the first member's wrong pixels that the second also gets wrong).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import rasterio
import torch

from dunemap.mapping.config import MapConfig
from dunemap.mapping.engine import map_raster
from dunemap.metrics import ConfusionMatrix
from dunemap.runtime import load_predictor
from dunemap.synth.dataset import write_dataset
from dunemap.synth.scene import SceneConfig, generate_scene
from dunemap.synth.writers import write_scene_geotiff
from dunemap.training import TrainConfig, train

HELD_OUT = [("namib", 1024, 10000), ("namib", 768, 10001), ("qaidam", 768, 10002), ("mojave", 768, 10003)]
RECIPE = dict(model="mit_b0", epochs=16, batch_size=8, lr=6e-4, augment="flip_rot90_spectral", seed=0,
              precision="auto", device="cpu", progress=False, overwrite=True, calibrate=False)
WINDOW = 128


def held_out_scenes(work: Path) -> list[tuple[str, Path, Path]]:
    out = []
    for region, size, seed in HELD_OUT:
        d = work / "held" / f"{region}_{size}_{seed}"
        emb, lab = d / "emb.tif", d / "lab.tif"
        if not lab.exists():
            d.mkdir(parents=True, exist_ok=True)
            write_scene_geotiff(generate_scene(SceneConfig(size=(size, size), region=region, seed=seed)), emb, lab,
                                dtype="int8")
        out.append((f"{region}{size}s{seed}", emb, lab))
    return out


def dihedral_mean(predict):
    """Test-time augmentation: the mean logits over the eight flips and quarter turns of the window."""
    def tta(x: torch.Tensor) -> torch.Tensor:
        outs = []
        for k in range(4):
            for flip in (False, True):
                y = torch.rot90(x, k, (-2, -1))
                z = predict(y.flip(-1) if flip else y)
                outs.append(torch.rot90(z.flip(-1) if flip else z, -k, (-2, -1)))
        return torch.stack(outs).mean(0)
    return tta


def ensemble_mean(predictors):
    """The log of the mean class probabilities of several models: a softmax of it is their average."""
    members = [p.predict for p in predictors]  # bound now: the first predictor's predict is replaced by this mean

    def mean(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([f(x).softmax(1) for f in members]).mean(0).clamp_min(1e-12).log()
    return mean


def score(work: Path, weights: Path | list[Path], tta: str = "none", stride: int = WINDOW - 32) -> dict:
    members = [weights] if isinstance(weights, Path) else list(weights)
    predictor = load_predictor(members[0], device="cpu", precision="auto")
    if len(members) > 1:
        predictor.predict = ensemble_mean([predictor] + [load_predictor(w, device="cpu", precision="auto")
                                                         for w in members[1:]])
    if tta == "d8":
        predictor.predict = dihedral_mean(predictor.predict)
    pooled, per_scene = ConfusionMatrix(10), {}
    tag = f"_ens{len(members)}" if len(members) > 1 else ""
    for name, emb, lab in held_out_scenes(work):
        out = members[0].parent / f"map_{name}_{tta}_s{stride}{tag}.tif"
        out.unlink(missing_ok=True)
        map_raster(emb, predictor, out, MapConfig(window=WINDOW, stride=stride, progress=False))
        with rasterio.open(out) as m, rasterio.open(lab) as t:
            pred, truth = m.read(1), t.read(1)
        cm = ConfusionMatrix(10)
        cm.update(pred, truth)
        pooled.update(pred, truth)
        per_scene[name] = round(float(cm.compute().miou), 3)
    return dict(held=per_scene, mean_held=round(float(np.mean(list(per_scene.values()))), 3),
                pooled_held=round(float(pooled.compute().miou), 3))


def shared_errors(work: Path, a: Path, b: Path, tta: str, stride: int) -> float:
    """Of the labelled pixels model ``a`` maps wrongly (its maps from :func:`score`), the share ``b`` gets wrong too."""
    wrong_a = wrong_both = 0
    for name, _, lab in held_out_scenes(work):
        with rasterio.open(lab) as t:
            truth = t.read(1)
        wrong = []
        for weights in (a, b):
            with rasterio.open(weights.parent / f"map_{name}_{tta}_s{stride}.tif") as m:
                wrong.append((m.read(1) != truth) & (truth != 255))
        wrong_a += int(wrong[0].sum())
        wrong_both += int((wrong[0] & wrong[1]).sum())
    return round(wrong_both / max(wrong_a, 1), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work", type=Path)
    ap.add_argument("name")
    ap.add_argument("scenes_per_region", type=int, nargs="?", default=6)
    ap.add_argument("scene_size", type=int, nargs="?", default=384)
    ap.add_argument("overrides", nargs="?", default="{}")
    ap.add_argument("--score-only", type=Path, nargs="+", help="trained checkpoints to score (no training); "
                    "several are scored as one ensemble")
    ap.add_argument("--tta", default="none", choices=("none", "d8"))
    ap.add_argument("--stride", type=int, default=WINDOW - 32, help="mapping stride in pixels (default 96)")
    args = ap.parse_args()
    work, line = args.work, {"name": args.name}
    if args.score_only:
        line.update(weights=[str(w) for w in args.score_only], tta=args.tta, stride=args.stride,
                    **score(work, args.score_only, args.tta, args.stride))
        if len(args.score_only) > 1:  # each member alone, and how many of the first one's errors the second shares
            line["members_mean_held"] = [score(work, w, args.tta, args.stride)["mean_held"] for w in args.score_only]
            line["shared_errors"] = shared_errors(work, *args.score_only[:2], args.tta, args.stride)
    else:
        data = work / "data" / f"d{args.scenes_per_region}x{args.scene_size}"
        if not (data / "manifest.csv").exists():
            write_dataset(data, scenes_per_region=args.scenes_per_region, scene_size=args.scene_size, tile=128,
                          seed=0, split_by="scene", overwrite=True)
        recipe = {**RECIPE, **json.loads(args.overrides)}
        t0, r0 = time.time(), resource.getrusage(resource.RUSAGE_SELF)
        run = work / "runs" / args.name
        result = train(TrainConfig(data_root=data, save_dir=run, **recipe))
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        line.update(data=data.name, recipe=json.loads(args.overrides), best_epoch=result.best_epoch,
                    best_val_miou=round(result.best_val_miou, 3), train_wall_s=round(time.time() - t0),
                    train_cpu_s=round(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime),
                    load1=float(open("/proc/loadavg").read().split()[0]), tta=args.tta,
                    **score(work, run / "best_model.pth", args.tta, args.stride))
    print(json.dumps(line))
    with open(work / "results.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
