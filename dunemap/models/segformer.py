"""The text-fused SegFormer: MiT backbone, cross-attention to class texts after one stage, all-MLP decoder.

Build models through ``dunemap.models.create_model(name, **overrides)``; ``MODEL_VARIANTS`` holds
the registered sizes. The parameter layout equals the published MADS checkpoint, so its ``state_dict`` loads as is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dunemap.errors import ConfigError
from dunemap.models.decoder import SegFormerHead
from dunemap.models.fusion import TextCrossAttention
from dunemap.models.mit import BLOCK_EPS, MiTBlock, OverlapPatchEmbed, init_weights, tokens_to_grid
from dunemap.models.openvocab import TextClassifierHead

PAD_MULTIPLE = 32  # total downsampling of the backbone
FUSIONS = ("cross_attn", "none")
HEADS = ("linear", "text")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model; stored in every dunemap checkpoint."""

    name: str = "mit_b2"  # registered variant the sizes came from
    family: str = "segformer"  # architecture family (dunemap.models.registry)
    embed_dims: tuple[int, ...] = (64, 128, 256, 512)  # width of each of the 4 stages
    depths: tuple[int, ...] = (3, 4, 6, 3)  # transformer blocks per stage
    heads: tuple[int, ...] = (1, 2, 4, 8)  # self-attention heads per stage
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)  # key/value spatial reduction per stage
    mlp_ratio: int = 4  # Mix-FFN hidden width = mlp_ratio * stage width
    decoder_dim: int = 256  # width of the all-MLP decoder
    in_channels: int = 64  # input bands (AEF: 64)
    num_classes: int = 10
    fusion: str = "cross_attn"  # "cross_attn" (text-fused, as published) or "none" (plain SegFormer)
    fusion_stage: int = 3  # 0-based stage whose output tokens attend to the texts (3 = deepest)
    fusion_heads: int = 8
    text_dim: int = 512  # width of the text embeddings (any encoder: the projections adapt)
    head: str = "linear"  # "linear": 1x1 conv classifier (published); "text": open-vocabulary cosine head (fusion none)
    drop_path: float = 0.1  # stochastic depth, linearly increasing over blocks
    dropout: float = 0.1  # decoder dropout before the classifier

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f: d[f] for f in cls.__dataclass_fields__ if f in d}
        for key in ("embed_dims", "depths", "heads", "sr_ratios"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)


MODEL_VARIANTS: dict[str, ModelConfig] = {
    # A few thousand parameters' worth of stages: for tests, demos on 2 cores, and CI.
    "mit_tiny": ModelConfig(name="mit_tiny", embed_dims=(16, 32, 64, 128), depths=(1, 1, 1, 1),
                            heads=(1, 2, 4, 8), decoder_dim=64),
    "mit_b0": ModelConfig(name="mit_b0", embed_dims=(32, 64, 160, 256), depths=(2, 2, 2, 2),
                          heads=(1, 2, 5, 8), decoder_dim=256),
    "mit_b1": ModelConfig(name="mit_b1", embed_dims=(64, 128, 320, 512), depths=(2, 2, 2, 2),
                          heads=(1, 2, 5, 8), decoder_dim=256),
    # The published MADS model: MiT-B2 depths with a 256-wide third stage and a 256-wide decoder.
    "mit_b2": ModelConfig(name="mit_b2", embed_dims=(64, 128, 256, 512), depths=(3, 4, 6, 3),
                          heads=(1, 2, 4, 8), decoder_dim=256),
}


class TextFusedSegFormer(nn.Module):
    """SegFormer whose stage-``fusion_stage`` tokens cross-attend to K class text embeddings.

    ``forward(x, text)`` takes (B, in_channels, H, W) for any H, W (padded internally to a multiple
    of 32 by reflection, logits cropped back) and text (K, text_dim) or (B, K, text_dim); when
    ``text`` is None the ``text_embeddings`` buffer set by ``set_text`` is used. Returns logits
    (B, num_classes, H, W).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        _validate(config)
        self.config = config
        dims = config.embed_dims
        self.patch_embeds = nn.ModuleList(
            OverlapPatchEmbed(config.in_channels if i == 0 else dims[i - 1], dims[i],
                              kernel=7 if i == 0 else 3, stride=4 if i == 0 else 2)
            for i in range(4)
        )
        rates = torch.linspace(0, config.drop_path, sum(config.depths), device="cpu").tolist()
        starts = [sum(config.depths[:i]) for i in range(4)]
        self.blocks = nn.ModuleList(
            nn.ModuleList(
                MiTBlock(dims[i], config.heads[i], config.sr_ratios[i], config.mlp_ratio, rates[starts[i] + j])
                for j in range(config.depths[i])
            )
            for i in range(4)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(d, eps=BLOCK_EPS) for d in dims)
        if config.fusion == "cross_attn":
            self.alignment_module = TextCrossAttention(dims[config.fusion_stage], config.text_dim, config.fusion_heads)
        linear = config.head == "linear"
        self.decode_head = SegFormerHead(dims, config.decoder_dim, config.num_classes if linear else None, config.dropout)
        if not linear:
            self.text_head = TextClassifierHead(config.decoder_dim, config.text_dim, embed_dim=config.decoder_dim)
        self.register_buffer("text_embeddings", None, persistent=False)
        self.apply(init_weights)

    @property
    def uses_text(self) -> bool:
        return self.config.fusion != "none" or self.config.head == "text"

    @property
    def open_vocabulary(self) -> bool:
        """True when classes are scored against their texts, so K may change after training."""
        return self.config.head == "text"

    def set_text(self, text: torch.Tensor | None) -> None:
        """Attach the (K, text_dim) class text embeddings used when ``forward`` gets no text."""
        if text is not None:
            if text.ndim != 2 or text.shape[1] != self.config.text_dim:
                raise ConfigError(
                    f"text embeddings of shape {tuple(text.shape)} do not fit the model (expected (K, {self.config.text_dim}))"
                )
            text = text.detach().to(torch.float32)
        self.text_embeddings = text

    def _text(self, text: torch.Tensor | None) -> torch.Tensor | None:
        if not self.uses_text:
            return None
        text = self.text_embeddings if text is None else text
        if text is None:
            raise ConfigError("this model uses class texts but no text embeddings were given (set_text or text=)")
        return text

    def forward_features(self, x: torch.Tensor, text: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The four stage maps (B, C_i, H/2^(i+2), W/2^(i+2)), the fusion stage's after cross-attention."""
        text = self._text(text)
        feats = []
        for i in range(4):
            x, h, w = self.patch_embeds[i](x)  # (B, N, C_i)
            for block in self.blocks[i]:
                x = block(x, h, w)
            x = self.norms[i](x)
            if self.config.fusion != "none" and i == self.config.fusion_stage:
                x = self.alignment_module(x, text)
            x = tokens_to_grid(x, h, w)  # (B, C_i, h, w)
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_with_features(x, text)[0]

    def forward_with_features(self, x: torch.Tensor, text: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, K, H, W) and the decoder's fused per-pixel features (B, decoder_dim, ceil(H/4), ceil(W/4)).

        The features are what the classifier sees; the area of applicability describes data in them.
        """
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ConfigError(
                f"input of shape {tuple(x.shape)} does not fit the model (expected (B, {self.config.in_channels}, H, W))"
            )
        h, w = x.shape[-2:]
        pad_h, pad_w = (-h) % PAD_MULTIPLE, (-w) % PAD_MULTIPLE
        if pad_h or pad_w:
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        text = self._text(text)
        features = self.decode_head.forward_features(self.forward_features(x, text))  # (B, D, H'/4, W'/4)
        if self.open_vocabulary:
            logits = self.text_head(features, text)  # (B, K, H'/4, W'/4)
        else:
            logits = self.decode_head.linear_pred(features)  # (B, K, H'/4, W'/4)
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits[..., :h, :w], features[..., : -(-h // 4), : -(-w // 4)]


def _validate(config: ModelConfig) -> None:
    if config.fusion not in FUSIONS:
        raise ConfigError(f"unknown fusion {config.fusion!r}; valid: {', '.join(FUSIONS)}")
    if config.head not in HEADS:
        raise ConfigError(f"unknown head {config.head!r}; valid: {', '.join(HEADS)}")
    if config.head == "text" and config.fusion != "none":
        raise ConfigError("an open-vocabulary head (head text) needs class-independent features: cross-attention "
                          "over all class texts would let a new class change every class's logits; use fusion none")
    if not 0 <= config.fusion_stage <= 3:
        raise ConfigError(f"fusion_stage must be 0..3, got {config.fusion_stage}")
    for key in ("embed_dims", "depths", "heads", "sr_ratios"):
        if len(getattr(config, key)) != 4:
            raise ConfigError(f"{key} needs 4 values (one per stage), got {getattr(config, key)}")
    if config.in_channels < 1 or config.num_classes < 1:
        raise ConfigError(f"in_channels and num_classes must be positive, got {config.in_channels}, {config.num_classes}")


__all__ = ["ModelConfig", "MODEL_VARIANTS", "TextFusedSegFormer"]
