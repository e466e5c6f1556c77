"""SegFormer's all-MLP decoder: per-stage 1x1 projections, upsample, concatenate, fuse, classify."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class StageProjection(nn.Module):
    """1x1 conv from one stage's width to the decoder width (the "MLP" of the all-MLP decoder)."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.linear = nn.Conv2d(in_dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class SegFormerHead(nn.Module):
    """Projects the four stage maps to ``dim``, upsamples to stage-1 size, fuses and predicts classes.

    The concatenation order is shallowest stage first (c1, c2, c3, c4), as in the published weights
    (the original SegFormer concatenates deepest first).
    ``forward_features`` returns the fused (B, dim, H/4, W/4) map that a text-classifier head can use.
    """

    def __init__(self, in_dims: tuple[int, ...], dim: int, num_classes: int | None, dropout: float = 0.1):
        """``num_classes=None`` builds no classifier: an external head (the text head) scores the features."""
        super().__init__()
        self.linear_layers = nn.ModuleList(StageProjection(d, dim) for d in in_dims)
        self.linear_fuse = nn.Conv2d(dim * len(in_dims), dim, 1, bias=False)
        self.batch_norm = nn.BatchNorm2d(dim)
        self.dropout = nn.Dropout2d(dropout)
        if num_classes is not None:
            self.linear_pred = nn.Conv2d(dim, num_classes, 1)

    def forward_features(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """The fused map ``fuse(cat(up(P_1 f_1), ..., up(P_n f_n)))``, computed as ``sum_i up((W_i P_i) f_i)``.

        The fuse conv is linear, so its block ``W_i`` for stage ``i`` can act before the upsampling
        (bilinear weights sum to one, so biases pass through) and be folded into that stage's
        projection ``P_i``: each stage needs one small 1x1 conv at its own resolution, and the
        (n * dim)-channel concatenation at stage-1 size, most of a small model's work, is never built.
        The same function of the same parameters; only the float rounding order differs.
        """
        size = feats[0].shape[-2:]
        dim = self.linear_fuse.out_channels
        blocks = self.linear_fuse.weight.flatten(1).split(dim, dim=1)  # W_i: (dim, dim) each
        fused = None
        for i, (layer, f, block) in enumerate(zip(self.linear_layers, feats, blocks)):
            proj = layer.linear
            weight = (block @ proj.weight.flatten(1))[:, :, None, None]  # (dim, C_i, 1, 1)
            part = F.conv2d(f, weight, block @ proj.bias)
            if i:
                part = F.interpolate(part, size=size, mode="bilinear", align_corners=False)
            fused = part if fused is None else fused + part
        return self.dropout(F.relu(self.batch_norm(fused)))  # (B, dim, H/4, W/4)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.linear_pred(self.forward_features(feats))  # (B, K, H/4, W/4)
