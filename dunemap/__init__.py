"""dunemap: map aeolian landforms from satellite embedding rasters with a text-fused SegFormer.

The Python API (each function documented in :mod:`dunemap.api`)::

    import dunemap
    scene = dunemap.generate_scene(region="namib", size=256, seed=1)
    result = dunemap.train(data_root="DATA", save_dir="RUN", model="mit_tiny", epochs=2)
    predictor = dunemap.load_predictor("RUN/best_model.pth")
    pred = dunemap.predict_array(predictor, scene.embedding)   # pred.classes, pred.confidence
    dunemap.map_raster("EMB.tif", predictor, "MAP.tif")
    areas = dunemap.map_statistics("MAP.tif")                   # a pandas DataFrame
    scores = dunemap.evaluate(data_root="DATA", weights="RUN/best_model.pth")

They load their modules on first use, so ``import dunemap`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from dunemap.errors import DunemapError

__version__ = "0.1.0"

_API = ("train", "evaluate", "map_raster", "load_predictor", "predict_array", "map_statistics", "generate_scene",
        "ArrayPrediction")
__all__ = ["DunemapError", "__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module("dunemap.api"), name)
    raise AttributeError(f"module 'dunemap' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
