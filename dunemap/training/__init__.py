"""Training: the config dataclass, the loop, and process-group helpers for torchrun."""

from dunemap.training.config import TrainConfig
from dunemap.training.loop import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]
