"""Training: the config dataclass, the loop, and process-group helpers for torchrun."""

from __future__ import annotations

import importlib
from typing import Any

from dunemap.training.config import TrainConfig

__all__ = ["TrainConfig", "TrainResult", "train"]
_LOOP = ("TrainResult", "train")  # loaded on first use: the loop imports torch, the config and its recipes do not


def __getattr__(name: str) -> Any:
    if name in _LOOP:
        return getattr(importlib.import_module("dunemap.training.loop"), name)
    raise AttributeError(f"module 'dunemap.training' has no attribute {name!r}")
