"""dunemap: map aeolian landforms from satellite embedding rasters with a text-fused SegFormer."""

from dunemap.errors import DunemapError

__version__ = "0.1.0"
__all__ = ["DunemapError", "__version__"]
