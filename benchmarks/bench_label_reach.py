"""Where a held-out map goes wrong: by each pixel's distance to its own class's dune sand (issue 11).

The label rule gives a dune field's bare corridors the field's class, so a bare pixel is identifiable
only with that class's sand within the model's context. For the held-out scenes of ``bench_heldout.py``
this regenerates each scene's labels and sand, measures every labelled pixel's distance to the nearest
pixel of its own class that carries that landform's sand, and scores a map (``bench_heldout.py``'s
output, one per scene) by that distance: how many pixels lie beyond the context a 128 px window
gives (32 px at stride 64), and how often the map is right there.

Usage: ``python benchmarks/bench_label_reach.py WORK MAP_DIR [--suffix none_s64]`` (MAP_DIR holds
``map_<scene>_<suffix>.tif``); prints a table per distance bin, the scenes pooled.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import rasterio
from scipy import ndimage

from bench_heldout import HELD_OUT, held_out_scenes
from dunemap.knowledge.catalog import load_catalog
from dunemap.synth.landforms import INTERDUNE, NUM_CLASSES
from dunemap.synth.layout import class_layout
from dunemap.synth.presets import PRESETS
from dunemap.synth.scene import SceneConfig, _rngs, compose_landforms
from dunemap.synth.wind import draw_wind

BARE = 0.2  # less of its landform's own sand than this: bare ground (as bench_identifiability.py)
EDGES = (0, 1, 16, 32, 64, 128, 10_000)  # distance bins, px


def reach(region: str, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(label, distance of each pixel to its own class's sand; 0 on sand, 0 for interdune)."""
    cfg = SceneConfig(size=(size, size), region=region, seed=seed)
    rng = _rngs(cfg)
    preset = PRESETS[region]
    label = class_layout(cfg.size, preset.class_weights(), rng["layout"], region_px=cfg.region_px)
    _, sand, _, _ = compose_landforms(label, draw_wind(preset.wind, rng["wind"]), preset.style, rng, cfg.blend_px)
    dist = np.zeros(label.shape, dtype=np.float32)
    for c in np.unique(label):
        if c == INTERDUNE:
            continue
        own = label == c
        dune = own & (sand >= BARE)
        d = ndimage.distance_transform_edt(~dune) if dune.any() else np.full(label.shape, np.inf)
        dist[own] = d[own]
    return label, dist


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work", type=Path)
    ap.add_argument("map_dir", type=Path)
    ap.add_argument("--suffix", default="none_s64")
    args = ap.parse_args()
    names = load_catalog().names
    counts = np.zeros((len(EDGES) - 1, NUM_CLASSES, 2), dtype=np.int64)  # bin, class, (pixels, right)
    for (region, size, seed), (name, _, lab) in zip(HELD_OUT, held_out_scenes(args.work)):
        label, dist = reach(region, size, seed)
        with rasterio.open(lab) as t, rasterio.open(args.map_dir / f"map_{name}_{args.suffix}.tif") as m:
            truth, pred = t.read(1), m.read(1)
        assert (truth == label).all(), f"{name}: regenerated labels differ from the stored truth"
        b = np.digitize(dist, EDGES[1:-1])
        for c in range(NUM_CLASSES):
            own = truth == c
            np.add.at(counts[:, c, 0], b[own], 1)
            np.add.at(counts[:, c, 1], b[own], (pred[own] == c).astype(np.int64))
    total = counts[..., 0].sum()
    print("| distance to own sand (px) | share of labelled pixels | recall | share of all errors |")
    print("| --- | ---: | ---: | ---: |")
    errors = counts[..., 0].sum() - counts[..., 1].sum()
    for i in range(len(EDGES) - 1):
        px, ok = counts[i, :, 0].sum(), counts[i, :, 1].sum()
        lo, hi = EDGES[i], EDGES[i + 1]
        label = "on sand or interdune" if i == 0 else f"{lo}-{hi - 1}" if hi < 10_000 else f">= {lo}"
        print(f"| {label} | {px / total:.3f} | {ok / max(px, 1):.3f} | {(px - ok) / errors:.3f} |")
    print("\nper class, pixels beyond 32 px of their own sand: share of the class, recall there")
    for c in range(NUM_CLASSES):
        px = counts[:, c, 0].sum()
        far = counts[3:, c, 0].sum()
        if px:
            print(f"  {names[c]:22s} {far / px:.3f}  {counts[3:, c, 1].sum() / max(far, 1):.3f}  "
                  f"(recall within 32 px {counts[:3, c, 1].sum() / max(px - far, 1):.3f})")


if __name__ == "__main__":
    main()
