"""Open-vocabulary segmentation head: class logits are scaled cosine similarities between pixel and text embeddings.

In the manner of LSeg and DenseCLIP, the classifier's weights are not a fixed (K, E) matrix but the
projected text embeddings of the class descriptions, so the number of classes K is whatever the
text matrix holds at call time: a class can be added, reworded or removed without new weights.
Each class's logit depends only on the pixel features and that class's own text, so adding a
class leaves the other classes' logits unchanged, provided the features do not depend on the texts:
a model with this head has no cross-attention to the class texts (``ModelConfig`` enforces it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dunemap.errors import InputError

CLIP_INIT_TEMPERATURE = 0.07  # CLIP initialises the logit scale to 1 / 0.07
MAX_LOGIT_SCALE = 100.0  # and clamps it so logits never exceed 100 * cosine


class TextClassifierHead(nn.Module):
    """Scores pixel features (B, E, H, W) against K text embeddings (K, D) or (B, K, D) -> logits (B, K, H, W).

    Pixels go through a 1x1 convolution into a joint ``embed_dim`` space, texts through a two-layer
    MLP into the same space; both are L2-normalised and the logits are
    ``exp(logit_scale) * cos(pixel, text)`` with the learnable ``logit_scale`` initialised to
    ``log(1 / 0.07)`` and clamped to ``[0, log(100)]``.
    """

    def __init__(self, feat_dim: int, text_dim: int, embed_dim: int = 256, hidden_dim: int | None = None) -> None:
        super().__init__()
        if min(feat_dim, text_dim, embed_dim) < 1:
            raise InputError(f"TextClassifierHead dims must be positive, got feat_dim={feat_dim}, "
                             f"text_dim={text_dim}, embed_dim={embed_dim}")
        hidden_dim = hidden_dim or embed_dim
        self.feat_dim = feat_dim
        self.text_dim = text_dim
        self.embed_dim = embed_dim
        self.pixel_proj = nn.Conv2d(feat_dim, embed_dim, kernel_size=1)
        self.text_proj = nn.Sequential(
            nn.Linear(text_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, embed_dim),
        )
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / CLIP_INIT_TEMPERATURE)))

    @property
    def scale(self) -> torch.Tensor:
        """The current multiplier on cosine similarity, exp(logit_scale) clamped to [1, 100]."""
        return self.logit_scale.clamp(0.0, math.log(MAX_LOGIT_SCALE)).exp()

    def embed_text(self, text: torch.Tensor) -> torch.Tensor:
        """Project text (K, D) or (B, K, D) into the joint space, unit length along the last axis."""
        if text.ndim not in (2, 3) or text.shape[-1] != self.text_dim:
            raise InputError(f"text embeddings must be (K, {self.text_dim}) or (B, K, {self.text_dim}), "
                             f"got {tuple(text.shape)}")
        return F.normalize(self.text_proj(text.to(self.logit_scale.dtype)), dim=-1)

    def embed_pixels(self, features: torch.Tensor) -> torch.Tensor:
        """Project features (B, E, H, W) into the joint space, unit length along channels."""
        if features.ndim != 4 or features.shape[1] != self.feat_dim:
            raise InputError(f"pixel features must be (B, {self.feat_dim}, H, W), got {tuple(features.shape)}")
        return F.normalize(self.pixel_proj(features), dim=1)

    def forward(self, features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        pix = self.embed_pixels(features)  # (B, J, H, W)
        txt = self.embed_text(text).to(pix.dtype)  # (K, J) or (B, K, J)
        if txt.ndim == 2:
            logits = torch.einsum("bjhw,kj->bkhw", pix, txt)
        else:
            if txt.shape[0] not in (1, pix.shape[0]):
                raise InputError(f"text batch {txt.shape[0]} does not match feature batch {pix.shape[0]}")
            logits = torch.einsum("bjhw,bkj->bkhw", pix, txt.expand(pix.shape[0], -1, -1))
        return self.scale.to(logits.dtype) * logits  # (B, K, H, W)
