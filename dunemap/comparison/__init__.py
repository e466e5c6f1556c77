"""Comparisons users run with `dunemap benchmark`: quality against per-pixel baselines and text ablations, and
model throughput (the library; the scripts that measure the figures in BENCHMARKS.md live in benchmarks/)."""

from dunemap.comparison.pixel import PIXEL_METHODS, PixelConfig, fit_pixel_classifier, pixel_confusion
from dunemap.comparison.quality import QualityResult, run_quality
from dunemap.comparison.spec import METHODS, PRESETS, PROTOCOLS, QualityConfig
from dunemap.comparison.speed import SpeedConfig, SpeedResult, run_speed

__all__ = [
    "METHODS", "PIXEL_METHODS", "PRESETS", "PROTOCOLS", "PixelConfig", "QualityConfig", "QualityResult",
    "SpeedConfig", "SpeedResult", "fit_pixel_classifier", "pixel_confusion", "run_quality", "run_speed",
]
