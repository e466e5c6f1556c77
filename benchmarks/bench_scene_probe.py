"""A random-forest probe of what separates classes within a scene and across scenes (namib by default).

Five scenes of one region: a forest learns from the left halves of scenes 0-3 and is scored on their
right halves (in-scene, 32 px apart) and on all of scene 4 (new scene). Once on each pixel's 64
values, once with Gaussian-smoothed copies added (context by blurring). A drop from in-scene to
new-scene is what the scene's own randomness costs a classifier that memorises the scene.
Usage: ``python benchmarks/bench_scene_probe.py [REGION] [SIZE] [SIGMAS]``, e.g. ``namib 512 8,24,64``.
"""

from __future__ import annotations

import sys

import numpy as np
from scipy import ndimage
from sklearn.ensemble import RandomForestClassifier

from dunemap.metrics import ConfusionMatrix
from dunemap.synth.scene import SceneConfig, generate_scene

GAP = 32  # pixels between the in-scene training and test halves


def features(embedding: np.ndarray, sigmas: list[float]) -> np.ndarray:
    """(H*W, 64 * (1 + len(sigmas))) per-pixel values plus their Gaussian-smoothed copies."""
    parts = [embedding] + [np.stack([ndimage.gaussian_filter(b, s) for b in embedding]) for s in sigmas]
    return np.concatenate(parts).reshape(len(parts) * embedding.shape[0], -1).T


def probe(scenes: list, sigmas: list[float], rng: np.random.Generator) -> tuple:
    size = scenes[0].label.shape[1]
    col = np.tile(np.arange(size), scenes[0].label.shape[0])
    feats = [features(sc.embedding, sigmas) for sc in scenes]
    labels = [sc.label.ravel() for sc in scenes]
    left, right = np.flatnonzero(col < size // 2 - GAP), np.flatnonzero(col >= size // 2 + GAP)
    picks = [rng.choice(left, 6000, replace=False) for _ in scenes[:4]]
    forest = RandomForestClassifier(100, n_jobs=2, random_state=0, class_weight="balanced").fit(
        np.concatenate([f[i] for f, i in zip(feats, picks)]), np.concatenate([y[i] for y, i in zip(labels, picks)]))
    in_scene, new_scene = ConfusionMatrix(10), ConfusionMatrix(10)
    for f, y in zip(feats[:4], labels[:4]):
        in_scene.update(forest.predict(f[right[::7]]), y[right[::7]])
    new_scene.update(forest.predict(feats[4][::7]), labels[4][::7])
    return in_scene.compute(), new_scene.compute()


def main(region: str = "namib", size: int = 512, sigmas: str = "8,24,64") -> None:
    scenes = [generate_scene(SceneConfig(size=(size, size), region=region, seed=s)) for s in range(5)]
    rng = np.random.default_rng(0)
    for name, sig in (("per pixel", []), (f"with context (sigmas {sigmas})", [float(s) for s in sigmas.split(",")])):
        a, b = probe(scenes, sig, rng)
        print(f"{name}: in-scene mIoU {a.miou:.3f}, new-scene mIoU {b.miou:.3f}")
        print("  per-class IoU, new scene:", np.round(b.per_class_iou, 2), " in-scene:", np.round(a.per_class_iou, 2))


if __name__ == "__main__":
    main(*(sys.argv[1:2]), *(int(a) for a in sys.argv[2:3]), *(sys.argv[3:4]))
