"""How much of each synthetic class is bare ground, and how far such a pixel is from its landform's sand.

A pixel whose own landform left no sand on it (the flat between barchans, a linear dune's corridor)
looks like interdune ground per pixel; only context can name its class. For each class this prints
the share of such bare pixels and the distance (pixels, 10 m) to the nearest pixel of the class's
own dune sand that covers 50 % / 95 % of them: the context radius a model needs to see. Writes
``docs/figures/identifiability.png``. Usage: ``python benchmarks/bench_identifiability.py [SIZE] [SCENES]``.
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
from dunemap.synth.scene import SceneConfig, _rngs, compose_landforms
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


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
