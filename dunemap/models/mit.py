"""Mix-Transformer (MiT) building blocks: overlapping patch embeds, efficient self-attention, Mix-FFN.

Module and parameter names follow the published MADS checkpoint layout (``patch_embeds.i``,
``blocks.i.j.{norm1,attn,norm2,mlp}``, ``norms.i``) so its weights load without renaming.
LayerNorm eps: 1e-6 in the blocks' norm1/norm2 and the stage norms, 1e-5 (PyTorch's default)
in patch-embed norms and the spatial-reduction norms.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BLOCK_EPS = 1e-6


def tokens_to_grid(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Tokens (B, h*w, C) as the grid (B, C, h, w) they tile, a view in channels-last memory: no copy, and a
    convolution reads it as it is (a transposed copy to NCHW cost the OpenVINO exports 45 % of a MiT-b2's time in
    bf16 at 512 px: BENCHMARKS.md, issue 30)."""
    return x.reshape(x.shape[0], h, w, x.shape[-1]).permute(0, 3, 1, 2)


def grid_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """A grid (B, C, h, w) as its tokens (B, h*w, C), row-major: the inverse of :func:`tokens_to_grid`."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1])


class OverlapPatchEmbed(nn.Module):
    """Strided conv (k=7/s=4 for stage 1, k=3/s=2 after) then LayerNorm, returning tokens and the grid size."""

    def __init__(self, in_channels: int, dim: int, kernel: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel, stride=stride, padding=kernel // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)  # (B, C, H', W')
        h, w = x.shape[-2:]
        return self.norm(grid_to_tokens(x)), h, w  # (B, H'W', C)


class EfficientSelfAttention(nn.Module):
    """Multi-head self-attention whose keys/values come from a grid shrunk ``sr`` times by a strided conv."""

    def __init__(self, dim: int, heads: int, sr: int, attn_drop: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention dim {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr
        self.attn_drop = attn_drop
        if sr > 1:
            self.sr = nn.Conv2d(dim, dim, sr, stride=sr)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        q = self.q(x).view(b, n, self.heads, c // self.heads).transpose(1, 2)  # (B, h, N, d)
        if self.sr_ratio > 1:
            x = self.norm(grid_to_tokens(self.sr(tokens_to_grid(x, h, w))))  # (B, N/sr^2, C)
        kv = self.kv(x).view(b, -1, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)  # (2, B, h, M, d)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1], dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class DepthwiseConv(nn.Module):
    """3x3 depthwise conv over the token grid (the positional cue of Mix-FFN)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return grid_to_tokens(self.dwconv(tokens_to_grid(x, h, w)))


class MixFFN(nn.Module):
    """fc1 -> depthwise 3x3 conv -> GELU -> fc2."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DepthwiseConv(hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = F.gelu(self.dwconv(self.fc1(x), h, w))
        return self.drop(self.fc2(self.drop(x)))


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch per sample during training."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class MiTBlock(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, heads: int, sr: int, mlp_ratio: int = 4, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=BLOCK_EPS)
        self.attn = EfficientSelfAttention(dim, heads, sr)
        self.norm2 = nn.LayerNorm(dim, eps=BLOCK_EPS)
        self.mlp = MixFFN(dim, dim * mlp_ratio)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


def init_weights(module: nn.Module) -> None:
    """SegFormer's initialisation: truncated-normal linears, fan-out normal convs, unit LayerNorms. A module built on
    the meta device, to be given a checkpoint's weights, is left alone (torch's reference kernels for random
    initialisation on meta import its compiler, seconds)."""
    if any(p.is_meta for p in module.parameters(recurse=False)):
        return
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
