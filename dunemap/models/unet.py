"""A compact U-Net baseline: the convolutional encoder-decoder users compare SegFormers against.

It takes no text; it shares the SegFormer's calling convention (``forward(x, text=None)``, any H, W,
``config`` with ``to_dict``) so the same trainer, checkpoints and mapper serve both families.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dunemap.errors import ConfigError


@dataclass(frozen=True)
class UNetConfig:
    name: str = "unet"
    family: str = "unet"
    in_channels: int = 64
    num_classes: int = 10
    base_width: int = 32  # channels of the first level; doubled at each level down
    depth: int = 4  # number of 2x downsamplings
    fusion: str = "none"  # a U-Net fuses no text (kept for a uniform interface)
    head: str = "linear"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """Encoder of ``depth`` max-pool levels, a mirrored decoder with skip connections, 1x1 classifier."""

    uses_text = False
    open_vocabulary = False

    def __init__(self, config: UNetConfig):
        super().__init__()
        if config.depth < 1 or config.base_width < 1:
            raise ConfigError(f"U-Net depth and base width must be positive, got {config.depth}, {config.base_width}")
        self.config = config
        widths = [config.base_width * 2**i for i in range(config.depth + 1)]
        self.down = nn.ModuleList(_double_conv(config.in_channels if i == 0 else widths[i - 1], widths[i])
                                  for i in range(config.depth + 1))
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
                                for i in reversed(range(config.depth)))
        self.merge = nn.ModuleList(_double_conv(2 * widths[i], widths[i]) for i in reversed(range(config.depth)))
        self.classifier = nn.Conv2d(widths[0], config.num_classes, 1)
        self.register_buffer("text_embeddings", None, persistent=False)

    def set_text(self, text: torch.Tensor | None) -> None:
        if text is not None:
            raise ConfigError("a U-Net uses no class texts")

    def forward(self, x: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ConfigError(
                f"input of shape {tuple(x.shape)} does not fit the model (expected (B, {self.config.in_channels}, H, W))"
            )
        h, w = x.shape[-2:]
        m = 2**self.config.depth
        x = F.pad(x, (0, (-w) % m, 0, (-h) % m), mode="replicate")
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        skips.pop()
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([skips.pop(), up(x)], dim=1))
        return self.classifier(x)[..., :h, :w]
