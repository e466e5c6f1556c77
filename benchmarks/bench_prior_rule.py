"""Which label-shift correction (dunemap.trust.prior): two-sided ``q / pi`` or one-sided ``min(q / pi, 1)``.

Checked on scenes of regions that ``bench_adapt.py``'s held-out scenes do not cover (atacama and yilgarn,
768 px, seeds 10004 and 10005), with the base models that ``bench_adapt.py`` trained in ``WORK``: each
scene is mapped once per model (probabilities at the training tile, stride half of it), 10 patches of
64 px are suggested and labelled from the truth, the class shares are fitted by ``em_shares`` (a grid of
every 4th pixel, the patches' labels included) and the base probabilities are corrected both ways. Each
scene is scored on the pixels outside its patches; it prints one line per scene and model and the
per-scene mean and pooled mIoU of each rule.

Usage: ``python benchmarks/bench_prior_rule.py WORK [--seeds 0 1] [--size 768] [--patch 64]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import rasterio

from dunemap.adapt.suggest import SuggestConfig, suggest_patches
from dunemap.data.dataset import SeedLayoutDataset
from dunemap.data.patches import read_patches
from dunemap.mapping.config import MapConfig
from dunemap.mapping.engine import map_raster
from dunemap.metrics import metrics_from_matrix
from dunemap.raster.reader import EmbeddingReader
from dunemap.raster.tags import product_paths
from dunemap.runtime import load_predictor
from dunemap.synth.scene import SceneConfig, generate_scene
from dunemap.synth.writers import write_scene_geotiff
from dunemap.trust.prior import SHARE_FLOOR, em_shares

SCENES = [("atacama", 10004), ("yilgarn", 10005)]
STEP = 4  # the grid of pixels whose probabilities enter the EM


def _matrix(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    keep = truth != 255
    return np.bincount(truth[keep].astype(np.int64) * 10 + pred[keep], minlength=100).reshape(10, 10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work", type=Path)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--size", type=int, default=768)
    ap.add_argument("--patch", type=int, default=64)
    args = ap.parse_args()
    counts = SeedLayoutDataset(args.work / "data", "train", 10, 64).class_counts()
    pi = counts / counts.sum()
    results: dict[str, dict[int, list]] = {}
    for region, scene_seed in SCENES:
        folder = args.work / "rule" / f"{region}_{args.size}_{scene_seed}"
        emb, lab = folder / "emb.tif", folder / "lab.tif"
        if not lab.exists():
            folder.mkdir(parents=True, exist_ok=True)
            write_scene_geotiff(generate_scene(SceneConfig(size=(args.size,) * 2, region=region, seed=scene_seed)),
                                emb, lab, dtype="int8")
        for seed in args.seeds:
            predictor = load_predictor(args.work / f"base_s{seed}" / "best_model.pth", device="cpu", precision="auto")
            tile = int(predictor.train_tile)
            out = folder / f"map_s{seed}.tif"
            if not out.exists():
                map_raster(emb, predictor, out, MapConfig(window=tile, stride=tile // 2, probabilities="float32",
                                                          applicability=True, progress=False))
            paths = product_paths(out)
            patches = folder / f"patches_s{seed}.gpkg"
            if not patches.exists():
                suggest_patches(emb, patches, SuggestConfig(n=10, size=args.patch),
                                probabilities=paths["probabilities"],
                                applicability=paths["applicability"])
            with rasterio.open(paths["probabilities"]) as r, rasterio.open(lab) as t:
                p, truth = r.read().astype(np.float64), t.read(1)
            inside = np.zeros(truth.shape, dtype=bool)
            with EmbeddingReader(emb) as image:
                for patch in read_patches(patches, image):
                    inside[patch.box.row:patch.box.row_stop, patch.box.col:patch.box.col_stop] = True
            labelled = np.bincount(truth[inside & (truth != 255)], minlength=10)[:10].astype(np.float64)
            q, _ = em_shares(p.reshape(10, -1).T[::STEP], pi, labelled, weight=float(STEP))
            log_ratio = np.log(np.clip(q, SHARE_FLOOR, None) / np.clip(pi, SHARE_FLOOR, None))
            unlabelled = np.where(inside, 255, truth)
            rules = {"none": np.zeros(10), "two-sided": log_ratio, "one-sided": np.minimum(log_ratio, 0.0)}
            for rule, bias in rules.items():
                m = _matrix((p * np.exp(bias)[:, None, None]).argmax(0), unlabelled)
                results.setdefault(rule, {}).setdefault(seed, []).append(m)
                print(json.dumps({"scene": f"{region}{args.size}s{scene_seed}", "seed": seed, "rule": rule,
                                  "miou": round(float(metrics_from_matrix(m).miou), 3)}), flush=True)
    for rule, by_seed in results.items():
        per_scene = np.mean([np.mean([metrics_from_matrix(m).miou for m in ms]) for ms in by_seed.values()])
        pooled = np.mean([metrics_from_matrix(np.sum(ms, axis=0)).miou for ms in by_seed.values()])
        print(f"| {rule} | {per_scene:.3f} | {pooled:.3f} |")


if __name__ == "__main__":
    main()
