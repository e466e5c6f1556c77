"""Per-region synthesis presets: wind regime, sand and ground materials, vegetation and dune-class mixture.

Keys match :data:`dunemap.regions.REGIONS`. The materials differ per region (sand colour and
brightness, ground type, moisture, vegetation), which shifts the embeddings of every class in that
region: holding one region out of training is a real domain shift. The shift is kept moderate, as in
AEF, which is trained to map the same surface to similar vectors anywhere on Earth: each region's
material lies about a third of the way from the five regions' mean towards its characteristic
extreme (red Namib and Yilgarn sand, pale Mojave sand, dark Atacama gravel, damp salty Qaidam
ground), so the same class is closer to itself across regions than to other classes (per-pixel
class-mean embeddings: cosine distance about 0.06 for one class across regions against 0.11
between classes within a region; with the full extremes it was 0.13 against 0.10). Wind regimes,
vegetation and class mixtures keep their full regional character.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dunemap.registry import choose
from dunemap.synth.embedding import Illumination, Material
from dunemap.synth.landforms import (
    BARCHANOID,
    CRESCENTIC,
    DOME,
    INTERDUNE,
    LINEAR,
    NEBKHA,
    NUM_CLASSES,
    PARABOLIC,
    REVERSING,
    SAND_SHEET,
    STAR,
    LandformStyle,
)
from dunemap.synth.wind import WindRegime


@dataclass(frozen=True)
class RegionPreset:
    """Everything region-specific about a synthetic scene."""

    name: str
    wind: WindRegime
    material: Material
    sun: Illumination  # mid-morning sun: from the north-east in the south, the south-east in the north
    style: LandformStyle
    mixture: dict[int, float] = field(default_factory=dict)  # class id -> relative area weight

    def class_weights(self) -> list[float]:
        """Normalised area weights indexed by class id (length NUM_CLASSES)."""
        w = [float(self.mixture.get(c, 0.0)) for c in range(NUM_CLASSES)]
        total = sum(w)
        return [x / total for x in w]


PRESETS: dict[str, RegionPreset] = {
    p.name: p
    for p in (
        RegionPreset(
            "namib",
            # SSW winds with easterly berg winds: bimodal, fairly variable -> linear and star dunes.
            WindRegime(drift_deg=20.0, drift_spread_deg=12.0, variability=0.45, bimodality=0.5, divergence_deg=110.0),
            Material(sand_albedo=0.36, sand_red=0.57, ground_albedo=0.30, ground_red=0.39, moisture=0.11),
            Illumination(azimuth_deg=60.0, elevation_deg=50.0),
            LandformStyle(relief=1.25, dune_veg=0.02, ground_veg=0.04, ground_sand=0.3),
            {LINEAR: 0.28, STAR: 0.2, CRESCENTIC: 0.1, BARCHANOID: 0.14, INTERDUNE: 0.1,
             SAND_SHEET: 0.06, REVERSING: 0.06, DOME: 0.06},
        ),
        RegionPreset(
            "atacama",
            # Steady southerly winds: unimodal -> barchans and sand sheets on dark gravel plains.
            WindRegime(drift_deg=30.0, drift_spread_deg=8.0, variability=0.1, bimodality=0.05, divergence_deg=30.0),
            Material(sand_albedo=0.34, sand_red=0.42, ground_albedo=0.27, ground_red=0.36, moisture=0.08),
            Illumination(azimuth_deg=60.0, elevation_deg=50.0),
            LandformStyle(relief=0.8, dune_veg=0.0, ground_veg=0.0, ground_sand=0.12),
            {CRESCENTIC: 0.34, SAND_SHEET: 0.24, INTERDUNE: 0.3, BARCHANOID: 0.12},
        ),
        RegionPreset(
            "mojave",
            # Westerlies against south-easterly storm winds: opposed modes -> reversing and star dunes.
            WindRegime(drift_deg=80.0, drift_spread_deg=15.0, variability=0.5, bimodality=0.75, divergence_deg=160.0),
            Material(sand_albedo=0.40, sand_red=0.44, ground_albedo=0.32, ground_red=0.34, moisture=0.09),
            Illumination(azimuth_deg=130.0, elevation_deg=55.0),
            LandformStyle(relief=1.0, dune_veg=0.1, ground_veg=0.18, ground_sand=0.3),
            {REVERSING: 0.24, STAR: 0.14, SAND_SHEET: 0.2, NEBKHA: 0.14, INTERDUNE: 0.14,
             PARABOLIC: 0.06, BARCHANOID: 0.08},
        ),
        RegionPreset(
            "qaidam",
            # Strong north-westerlies: unimodal -> barchans, domes and transverse ridges; salty, cold, damp ground.
            WindRegime(drift_deg=120.0, drift_spread_deg=8.0, variability=0.15, bimodality=0.1, divergence_deg=40.0),
            Material(sand_albedo=0.37, sand_red=0.39, ground_albedo=0.35, ground_red=0.28, moisture=0.16),
            Illumination(azimuth_deg=130.0, elevation_deg=55.0),
            LandformStyle(relief=0.9, dune_veg=0.04, ground_veg=0.06, ground_sand=0.2),
            {CRESCENTIC: 0.3, DOME: 0.24, BARCHANOID: 0.14, INTERDUNE: 0.2, LINEAR: 0.12},
        ),
        RegionPreset(
            "yilgarn",
            # South-easterly trades with seasonal westerlies -> long vegetated linear dunes and sand plains.
            WindRegime(drift_deg=290.0, drift_spread_deg=10.0, variability=0.3, bimodality=0.4, divergence_deg=90.0),
            Material(sand_albedo=0.35, sand_red=0.61, ground_albedo=0.29, ground_red=0.45, moisture=0.10),
            Illumination(azimuth_deg=60.0, elevation_deg=50.0),
            LandformStyle(relief=0.6, dune_veg=0.35, ground_veg=0.4, ground_sand=0.45),
            {LINEAR: 0.38, SAND_SHEET: 0.24, NEBKHA: 0.14, PARABOLIC: 0.12, INTERDUNE: 0.12},
        ),
    )
}


def get_preset(name: str) -> RegionPreset:
    """Look up a region's synthesis preset (case-insensitive); a bad name lists the valid ones."""
    return choose(PRESETS, name.lower(), "region")
