"""How much of each synthetic class is bare ground, and how far such a pixel is from its landform's sand.

A pixel whose own landform left no sand on it (the flat between barchans, a linear dune's corridor)
looks like interdune ground per pixel; only context can name its class. For each class this prints
the share of such bare pixels and the distance (pixels, 10 m) to the nearest pixel of the class's
own dune sand that covers 50 % / 95 % of them: the context radius a model needs to see. Writes
``docs/figures/identifiability.png``. Then, for two demo recipes, how many training scenes show each
class (each scene draws the class's landform parameters, wind and materials once, so this counts the
independent looks of a class a network learns from), and what AEF int8 quantisation does to the vectors.
Usage: ``python benchmarks/bench_identifiability.py [SIZE] [SCENES]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from dunemap.knowledge.catalog import load_catalog
from dunemap.synth.landforms import INTERDUNE, NUM_CLASSES
from dunemap.synth.layout import class_layout
from dunemap.synth.presets import PRESETS
from dunemap.synth.scene import SceneConfig, _rngs, compose_landforms, generate_scene
from dunemap.synth.wind import draw_wind

BARE = 0.2  # a pixel with less of its landform's own sand than this is bare ground


def main(size: int = 512, scenes: int = 3) -> None:
    names = load_catalog().names
    bare = np.zeros(NUM_CLASSES)
    total = np.zeros(NUM_CLASSES)
    dists: list[list[np.ndarray]] = [[] for _ in range(NUM_CLASSES)]
    for region, preset in PRESETS.items():
        for seed in range(scenes):
            cfg = SceneConfig(size=(size, size), region=region, seed=seed)
            rng = _rngs(cfg)
            wind = draw_wind(preset.wind, rng["wind"])
            label = class_layout(cfg.size, preset.class_weights(), rng["layout"], region_px=cfg.region_px)
            _, sand, _, _ = compose_landforms(label, wind, preset.style, rng, cfg.blend_px)
            for c in np.unique(label):
                own = label == c
                is_bare = own & (sand < BARE)
                total[c] += own.sum()
                bare[c] += is_bare.sum()
                if c != INTERDUNE and (own & ~is_bare).any():
                    d = ndimage.distance_transform_edt(~(own & ~is_bare))  # to the nearest own-sand pixel
                    dists[c].append(d[is_bare])
    rows = []
    print(f"| class | pixels | bare share | distance to own sand, median / 95 % (px) |")
    print("| --- | ---: | ---: | ---: |")
    for c in range(NUM_CLASSES):
        if not total[c]:
            continue
        d = np.concatenate(dists[c]) if dists[c] else np.zeros(0)
        q50, q95 = (np.percentile(d, 50), np.percentile(d, 95)) if d.size else (float("nan"),) * 2
        rows.append((names[c], bare[c] / total[c], q50, q95))
        print(f"| {names[c]} | {int(total[c])} | {100 * bare[c] / total[c]:.0f} % | {q50:.0f} / {q95:.0f} |")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.2), dpi=110)
    ax = fig.add_subplot(1, 2, 1)
    ax.barh([r[0] for r in rows], [100 * r[1] for r in rows], color="#b07030")
    ax.set_xlabel("bare-ground share of the class (%)")
    ax.tick_params(labelsize=7)
    ax = fig.add_subplot(1, 2, 2)
    ax.barh([r[0] for r in rows], [r[3] for r in rows], color="#3070b0", label="95 %")
    ax.barh([r[0] for r in rows], [r[2] for r in rows], color="#90c0e0", label="median")
    ax.set_xlabel("distance of bare pixels to own dune sand (px)")
    ax.set_yticklabels([])
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(__file__).resolve().parents[1] / "docs" / "figures" / "identifiability.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    print(f"wrote {out}")
    instances(names)
    quantisation()


def instances(names: list[str]) -> None:
    """Training scenes in which each class covers at least 5 % of the scene, for two demo data recipes."""
    from dunemap.data.splits import holdout_scenes
    from dunemap.synth.dataset import scene_seed

    recipes = {"2 x 512 px, block split": (2, 512, False), "6 x 384 px, scene split": (6, 384, True)}
    counts = {}
    for label, (spr, size, by_scene) in recipes.items():
        held = holdout_scenes({r: [str(i) for i in range(spr)] for r in PRESETS}, (0.7, 0.15, 0.15), 0) if by_scene else {}
        n = np.zeros(NUM_CLASSES, dtype=int)
        for region, preset in PRESETS.items():
            for i in range(spr):
                if (region, str(i)) in held:
                    continue
                cfg = SceneConfig(size=(size, size), region=region, seed=scene_seed(0, i))
                label_img = class_layout(cfg.size, preset.class_weights(), _rngs(cfg)["layout"], region_px=cfg.region_px)
                n += np.bincount(label_img.ravel(), minlength=NUM_CLASSES) >= 0.05 * label_img.size
        counts[label] = n
    print("\n| class | " + " | ".join(f"training scenes showing it ({k})" for k in recipes) + " |")
    print("| --- |" + " ---: |" * len(recipes))
    for c in range(NUM_CLASSES):
        print(f"| {names[c]} | " + " | ".join(str(counts[k][c]) for k in recipes) + " |")


def quantisation() -> None:
    """Cosine between float embeddings and their AEF int8 round trip, and the share of flipped argmax bands."""
    from dunemap.io.aef import dequantize, quantize

    scene = generate_scene(SceneConfig(size=(256, 256), region="namib", seed=0))
    back, _ = dequantize(quantize(scene.embedding))
    cos = (scene.embedding * back).sum(0) / np.linalg.norm(back, axis=0)
    print(f"\nAEF int8 round trip (namib, 256 px): cosine to the float vector median {np.median(cos):.5f}, "
          f"1st percentile {np.percentile(cos, 1):.5f}; mean absolute change per band "
          f"{np.abs(scene.embedding - back).mean():.5f} against a mean |value| of {np.abs(scene.embedding).mean():.4f}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
