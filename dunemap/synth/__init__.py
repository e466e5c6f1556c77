"""Synthetic Mars-analog dune fields: landform height fields turned into AEF-like 64-band embeddings.

The public API is importable from here; submodules load on first use so that importing the package
(as the CLI does to list its options) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SceneConfig": "dunemap.synth.scene",
    "Scene": "dunemap.synth.scene",
    "generate_scene": "dunemap.synth.scene",
    "write_scene_geotiff": "dunemap.synth.writers",
    "write_hillshade_png": "dunemap.synth.writers",
    "write_scene_files": "dunemap.synth.writers",
    "write_dataset": "dunemap.synth.dataset",
    "PRESETS": "dunemap.synth.presets",
    "LANDFORMS": "dunemap.synth.landforms",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dunemap.synth' has no attribute {name!r}")
