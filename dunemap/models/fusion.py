"""Text-visual fusion: visual tokens (queries) cross-attend to the class text embeddings (keys/values)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TextCrossAttention(nn.Module):
    """Multi-head cross-attention of visual tokens over K text embeddings, residual, then LayerNorm.

    ``out = LayerNorm(x + W_o · MHA(W_q x, W_k t, W_v t))``. Names (``vis_proj_q``, ``text_proj_k``,
    ``text_proj_v``, ``out_proj``, ``norm``) follow the published ``alignment_module`` layout.
    """

    def __init__(self, dim: int, text_dim: int, heads: int = 8, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"fusion dim {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.vis_proj_q = nn.Linear(dim, dim)
        self.text_proj_k = nn.Linear(text_dim, dim)
        self.text_proj_v = nn.Linear(text_dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """x: (B, N, C) tokens; text: (K, D) or (B, K, D) embeddings. Returns (B, N, C)."""
        b, n, c = x.shape
        if text.ndim == 2:
            text = text.unsqueeze(0).expand(b, -1, -1)  # (B, K, D)
        text = text.to(x.dtype)
        d = c // self.heads
        q = self.vis_proj_q(x).view(b, n, self.heads, d).transpose(1, 2)  # (B, h, N, d)
        k = self.text_proj_k(text).view(b, -1, self.heads, d).transpose(1, 2)  # (B, h, K, d)
        v = self.text_proj_v(text).view(b, -1, self.heads, d).transpose(1, 2)  # (B, h, K, d)
        attn = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.norm(x + self.out_proj(attn.transpose(1, 2).reshape(b, n, c)))
