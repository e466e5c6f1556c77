"""Does calibrated confidence mean what it says, and does the area of applicability find the unfamiliar ground?

Uses a finished ``dunemap demo`` folder (its model, training data and held-out scene with truth):

1. The demo's model on its held-out scene (a new scene of a region seen in training): the expected
   calibration error of the uncalibrated and the calibrated confidence, accuracy per calibrated
   confidence bin, mIoU inside and outside the area of applicability (AOA) and the share outside,
   and the wall time of mapping with and without ``--applicability`` (same run, same machine).
2. Leave one region out: the demo's recipe retrained without the held-out scene's region, then the
   same figures on that scene (a region never seen) and on a new scene of a training region, plus a
   raster whose west half is the familiar region and east half the unseen one.

Part 1 also maps a raster whose west half is the held-out scene and east half the same ground from
another synthetic embedding model (``SceneConfig.embedding_seed``): ground no model here saw.

    python benchmarks/bench_trust.py --demo dunemap_demo --work runs/bench_trust
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import rasterio

from dunemap.demo import DemoConfig
from dunemap.mapping.config import MapConfig
from dunemap.mapping.engine import map_raster
from dunemap.metrics import metrics_from_matrix
from dunemap.runtime import load_predictor
from dunemap.synth import SceneConfig, generate_scene, write_scene_geotiff
from dunemap.synth.embedding import EMBED_SEED
from dunemap.training import TrainConfig, train
from dunemap.trust.calibration import reliability

IGNORE = 255


def confusion(pred: np.ndarray, true: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(true.astype(np.int64) * k + pred, minlength=k * k).reshape(k, k)


def map_scene(emb: Path, weights: Path, out: Path, window: int, applicability: bool, calibrated: bool = True):
    """Map ``emb`` (float32 confidence, optionally the AOA); returns (classes, confidence, inside mask or None, seconds)."""
    predictor = load_predictor(weights, device="cpu", precision="auto")
    if not calibrated:
        predictor.temperature = 1.0
    config = MapConfig(window=window, stride=window - 32, confidence="float32", applicability=applicability,
                       progress=False, overwrite=True, resume=False)
    t0 = time.perf_counter()
    map_raster(emb, predictor, out, config)
    seconds = time.perf_counter() - t0
    with rasterio.open(out) as src:
        classes = src.read(1)
    with rasterio.open(out.with_name(f"{out.stem}_confidence.tif")) as src:
        conf = src.read(1)
    inside = None
    if applicability:
        with rasterio.open(out.with_name(f"{out.stem}_applicability.tif")) as src:
            inside = src.read(2)
    return classes, conf, inside, seconds


def scene_figures(classes, conf, inside, true, k: int, raw_conf=None, raw_classes=None) -> dict:
    """ECE (calibrated, and raw when given), accuracy per confidence bin, mIoU inside/outside the AOA."""
    valid = (true != IGNORE) & (classes != IGNORE)
    correct = classes[valid] == true[valid]
    cal = reliability(conf[valid], correct, bins=15)
    bins = reliability(conf[valid], correct, bins=5)
    out = {
        "pixels": int(valid.sum()),
        "miou": metrics_from_matrix(confusion(classes[valid], true[valid], k)).miou,
        "ece_calibrated": cal.ece,
        "accuracy_by_confidence": [
            {"confidence": f"{bins.edges[i]:.1f}-{bins.edges[i + 1]:.1f}", "pixels": int(bins.count[i]),
             "mean_confidence": float(bins.confidence[i]), "accuracy": float(bins.accuracy[i])}
            for i in range(5) if bins.count[i]
        ],
    }
    if raw_conf is not None:
        rv = (true != IGNORE) & (raw_classes != IGNORE)
        out["ece_uncalibrated"] = reliability(raw_conf[rv], raw_classes[rv] == true[rv], bins=15).ece
    if inside is not None:
        ins = valid & (inside == 1)
        outs = valid & (inside == 0)
        out["share_outside"] = float(outs.sum() / max(valid.sum(), 1))
        out["miou_inside"] = metrics_from_matrix(confusion(classes[ins], true[ins], k)).miou if ins.any() else None
        out["miou_outside"] = metrics_from_matrix(confusion(classes[outs], true[outs], k)).miou if outs.any() else None
        # the share of pixels right: unlike mIoU, it does not change with the mix of classes in a small subset
        out["accuracy_inside"] = float((classes[ins] == true[ins]).mean()) if ins.any() else None
        out["accuracy_outside"] = float((classes[outs] == true[outs]).mean()) if outs.any() else None
    return out


def half_and_half(familiar: Path, unfamiliar: Path, weights: Path, stem: Path, window: int,
                  true: np.ndarray | None = None, k: int = 10) -> dict:
    """Map a raster whose west half is ``familiar`` and east half ``unfamiliar`` (same grid) with the AOA.

    Returns the share of the west half inside and of the east half outside; with ``true`` (the
    labels of both halves) also the mIoU of each half and of the pixels inside and outside.
    """
    half = stem.with_name(f"{stem.name}_emb.tif")
    with rasterio.open(familiar) as a, rasterio.open(unfamiliar) as b:
        w = a.width // 2
        data = np.concatenate([a.read()[:, :, :w], b.read()[:, :, w:]], axis=2)
        profile = b.profile
    with rasterio.open(half, "w", **profile) as dst:
        dst.write(data)
    classes, _, inside, _ = map_scene(half, weights, stem.with_name(f"{stem.name}.tif"), window, applicability=True)
    west, east = inside[:, :w], inside[:, w:]
    out = {
        "familiar_west_inside": float((west == 1).sum() / max((west != IGNORE).sum(), 1)),
        "unfamiliar_east_outside": float((east == 0).sum() / max((east != IGNORE).sum(), 1)),
    }
    if true is not None:
        valid = (true != IGNORE) & (classes != IGNORE)
        for name, where in (("west", np.s_[:, :w]), ("east", np.s_[:, w:])):
            v = valid[where]
            out[f"miou_{name}"] = metrics_from_matrix(confusion(classes[where][v], true[where][v], k)).miou
        for name, flag in (("inside", 1), ("outside", 0)):
            m = valid & (inside == flag)
            out[f"miou_{name}"] = metrics_from_matrix(confusion(classes[m], true[m], k)).miou if m.any() else None
            out[f"accuracy_{name}"] = float((classes[m] == true[m]).mean()) if m.any() else None
    return out


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo", type=Path, default=Path("dunemap_demo"), help="a finished dunemap demo folder")
    ap.add_argument("--weights", type=Path, help="the model to test (default: DEMO/run/best_model.pth)")
    ap.add_argument("--work", type=Path, default=Path("runs/bench_trust"))
    ap.add_argument("--skip-loro", action="store_true", help="only the demo model's figures")
    ap.add_argument("--pairs", type=int, default=3, help="map the scene this many times with and without the AOA")
    args = ap.parse_args()
    demo = DemoConfig()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    weights = args.weights or args.demo / "run" / "best_model.pth"
    emb, truth = args.demo / "scene" / "heldout_emb.tif", args.demo / "scene" / "heldout_labels.tif"
    true = read(truth)
    k = load_predictor(weights, device="cpu").num_classes
    window = demo.map_window
    results: dict = {"demo": str(args.demo), "window": window}

    # 1. the demo model on its held-out scene
    # the cost of --applicability: pairs mapped in turn (A B A B ...), the median of each
    plain_s, aoa_s = [], []
    for _ in range(args.pairs):
        plain = map_scene(emb, weights, work / "demo_plain.tif", window, applicability=False)
        aoa = map_scene(emb, weights, work / "demo_aoa.tif", window, applicability=True)
        plain_s.append(plain[3])
        aoa_s.append(aoa[3])
    raw = map_scene(emb, weights, work / "demo_raw.tif", window, applicability=False, calibrated=False)
    fig = scene_figures(aoa[0], aoa[1], aoa[2], true, k, raw_conf=raw[1], raw_classes=raw[0])
    fig["map_seconds"] = {"plain": float(np.median(plain_s)), "applicability": float(np.median(aoa_s)),
                          "overhead": float(np.median(aoa_s) / np.median(plain_s) - 1), "pairs": len(plain_s)}
    fig["temperature"] = load_predictor(weights, device="cpu").temperature
    results["heldout_scene"] = fig
    print(json.dumps({"heldout_scene": fig}, indent=2))

    # the same ground seen through another embedding model (a generator no model here trained on):
    # west half the held-out scene as it is, east half the same scene from the other model
    foreign_emb = work / "foreign_emb.tif"
    if not foreign_emb.exists():
        with rasterio.open(emb) as src:
            size, region, seed = src.height, src.tags()["region"], int(src.tags()["seed"])
        scene = generate_scene(SceneConfig(size=(size, size), region=region, seed=seed, embedding_seed=EMBED_SEED + 1))
        write_scene_geotiff(scene, foreign_emb, work / "foreign_labels.tif", dtype="int8")
    if not (read(work / "foreign_labels.tif") == true).all():
        raise SystemExit(f"{foreign_emb}: not the held-out scene's ground (labels differ); delete it and rerun")
    results["foreign_half"] = half_and_half(emb, foreign_emb, weights, work / "foreign_half", window, true, k)
    print(json.dumps({"foreign_half": results["foreign_half"]}, indent=2))

    if not args.skip_loro:
        # 2. leave the held-out scene's region out of training
        run = work / "loro_run"
        if not (run / "best_model.pth").exists():
            train(TrainConfig(data_root=args.demo / "data", save_dir=run, model=demo.model, epochs=demo.epochs,
                              batch_size=demo.batch_size, lr=demo.lr, augment=demo.augment, seed=demo.seed,
                              holdout_regions=[demo.map_region], device="cpu", progress=False))
        loro = run / "best_model.pth"
        seen_region = next(r for r in demo.regions if r != demo.map_region)
        seen_emb, seen_truth = work / "seen_emb.tif", work / "seen_labels.tif"
        if not seen_emb.exists():
            scene = generate_scene(SceneConfig(size=(demo.map_size, demo.map_size), region=seen_region,
                                               seed=demo.seed + 20_000))
            write_scene_geotiff(scene, seen_emb, seen_truth, dtype="int8")
        unseen = map_scene(emb, loro, work / "loro_unseen.tif", window, applicability=True)
        seen = map_scene(seen_emb, loro, work / "loro_seen.tif", window, applicability=True)
        results["loro"] = {
            "held_out_region": demo.map_region, "seen_region": seen_region,
            "unseen_region_scene": scene_figures(*unseen[:3], true, k),
            "seen_region_scene": scene_figures(*seen[:3], read(seen_truth), k),
        }
        # half familiar (west: the seen region) and half unfamiliar (east: the unseen region)
        results["loro"]["half_and_half"] = half_and_half(seen_emb, emb, loro, work / "loro_half", window)
        print(json.dumps({"loro": results["loro"]}, indent=2))
    (work / "trust.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {work / 'trust.json'}")


if __name__ == "__main__":
    main()
