"""Loose-sand cover of interdune and sand-sheet pixels, under the ground's sand cap and without it.

Interdune and sand sheet are both flat; what tells them apart in the field is how much loose sand
covers the ground. For each region this pools ``SCENES`` scenes of ``SIZE`` px (seeds 0..SCENES-1)
plus the demo's held-out namib scene, and prints the 5 / 50 / 95 % quantiles of the sand cover of
each class's pixels and the share of interdune pixels above the thinnest sand sheet's cover, once
with the generator's cap on the ground's sand (:data:`dunemap.synth.landforms.GROUND_SAND_MAX`) and
once without it (``sand_max`` 1, the rule before the cap). Usage:
``python benchmarks/bench_ground_sand.py [SIZE] [SCENES]``.
"""

from __future__ import annotations

import sys

import numpy as np

from dunemap.demo import DemoConfig
from dunemap.synth.landforms import GROUND_SAND_MAX, INTERDUNE, SAND_SHEET, SAND_SHEET_COVER
from dunemap.synth.layout import class_layout
from dunemap.synth.presets import PRESETS, get_preset
from dunemap.synth.scene import SceneConfig, _rngs, compose_landforms, ground_cover
from dunemap.synth.wind import draw_wind


def class_sand(cfg: SceneConfig, sand_max: float) -> dict[int, np.ndarray]:
    """The sand cover (dunes over ground, as the scene composes them) of each flat class's pixels."""
    preset = get_preset(cfg.region)
    rng = _rngs(cfg)
    wind = draw_wind(preset.wind, rng["wind"])
    label = class_layout(cfg.size, preset.class_weights(), rng["layout"], region_px=cfg.region_px)
    _, dune_sand, _, _ = compose_landforms(label, wind, preset.style, rng, cfg.blend_px)
    ground_sand, _, _ = ground_cover(cfg.size, preset.style, rng["ground"], sand_max=sand_max)
    sand = dune_sand + (1.0 - dune_sand) * ground_sand
    return {c: sand[label == c] for c in (INTERDUNE, SAND_SHEET)}


def row(name: str, parts: list[dict[int, np.ndarray]]) -> str:
    cells = [name]
    for c in (INTERDUNE, SAND_SHEET):
        values = np.concatenate([p[c] for p in parts])
        if values.size == 0:
            cells.append("-")
            continue
        q = np.quantile(values, [0.05, 0.5, 0.95])
        cells.append(" / ".join(f"{v:.2f}" for v in q))
    inter = np.concatenate([p[INTERDUNE] for p in parts])
    cells.append(f"{(inter > SAND_SHEET_COVER[0]).mean():.0%}" if inter.size else "-")
    return "| " + " | ".join(cells) + " |"


def main(size: int = 384, scenes: int = 6) -> None:
    demo = DemoConfig()
    held_out = SceneConfig(size=(demo.map_size, demo.map_size), region=demo.map_region, seed=demo.seed + 10_000)
    for sand_max, title in ((1.0, "without the cap (the rule before)"), (GROUND_SAND_MAX, f"ground sand capped at {GROUND_SAND_MAX}")):
        print(f"\n{title}: sand cover quantiles 5 / 50 / 95 %\n")
        print(f"| scenes | interdune | sand sheet | interdune above {SAND_SHEET_COVER[0]} |")
        print("| --- | --- | --- | ---: |")
        for region in PRESETS:
            parts = [class_sand(SceneConfig(size=(size, size), region=region, seed=s), sand_max) for s in range(scenes)]
            print(row(f"{region}, {scenes} x {size} px", parts))
        print(row(f"demo held-out {demo.map_region} scene", [class_sand(held_out, sand_max)]))


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
