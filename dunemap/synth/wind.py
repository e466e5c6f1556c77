"""Wind regimes: a region's climatology of sand-moving winds and the wind drawn for one scene."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WindRegime:
    """A region's sand-transport wind climatology (directions are azimuths the sand moves toward)."""

    drift_deg: float  # resultant drift direction (RDD), degrees clockwise from north
    drift_spread_deg: float  # scene-to-scene std of the RDD
    variability: float  # 0 = unidirectional .. 1 = winds from everywhere (star dunes); sets sinuosity and jitter
    bimodality: float  # 0 = one mode .. 1 = two equal opposed-ish modes (reversing / linear dunes)
    divergence_deg: float  # angle between the two modes of a bimodal regime


@dataclass(frozen=True)
class Wind:
    """The wind regime of one scene."""

    drift_deg: float  # resultant drift direction
    variability: float
    bimodality: float
    divergence_deg: float

    @property
    def drift_rad(self) -> float:
        return math.radians(self.drift_deg)

    @property
    def primary_deg(self) -> float:
        """Direction of the stronger of two modes (equals the RDD for a unimodal regime)."""
        return self.drift_deg - 0.5 * self.divergence_deg * self.bimodality

    def jitter_deg(self) -> float:
        """Std of object orientations about the RDD implied by the variability (degrees)."""
        return 4.0 + 30.0 * self.variability


def draw_wind(regime: WindRegime, rng: np.random.Generator) -> Wind:
    """Draw one scene's wind from a region's regime."""
    drift = (regime.drift_deg + rng.normal(0.0, regime.drift_spread_deg)) % 360.0
    var = float(np.clip(regime.variability + rng.normal(0.0, 0.05), 0.0, 1.0))
    bim = float(np.clip(regime.bimodality + rng.normal(0.0, 0.05), 0.0, 1.0))
    div = float(np.clip(regime.divergence_deg + rng.normal(0.0, 10.0), 0.0, 180.0))
    return Wind(drift_deg=float(drift), variability=var, bimodality=bim, divergence_deg=div)
