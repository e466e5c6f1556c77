"""Benchmarks users ask for: quality against per-pixel baselines and text ablations, and model throughput."""

from dunemap.benchmark.pixel import PIXEL_METHODS, PixelConfig, fit_pixel_classifier, pixel_confusion
from dunemap.benchmark.quality import QualityResult, run_quality
from dunemap.benchmark.spec import METHODS, PRESETS, PROTOCOLS, QualityConfig
from dunemap.benchmark.speed import SpeedConfig, SpeedResult, run_speed

__all__ = [
    "METHODS", "PIXEL_METHODS", "PRESETS", "PROTOCOLS", "PixelConfig", "QualityConfig", "QualityResult",
    "SpeedConfig", "SpeedResult", "fit_pixel_classifier", "pixel_confusion", "run_quality", "run_speed",
]
