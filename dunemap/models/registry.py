"""One registry of every architecture by name: SegFormer sizes and the U-Net baseline, one factory for all."""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from dunemap.errors import ConfigError
from dunemap.models.segformer import MODEL_VARIANTS, ModelConfig, TextFusedSegFormer
from dunemap.models.unet import UNet, UNetConfig
from dunemap.registry import choose

Config = ModelConfig | UNetConfig

ARCHITECTURES: dict[str, Config] = {**MODEL_VARIANTS, "unet": UNetConfig()}
_FAMILIES = {"segformer": (ModelConfig, TextFusedSegFormer), "unet": (UNetConfig, UNet)}


def model_config(name: str, **overrides) -> Config:
    """The registered architecture ``name`` with fields replaced by ``overrides``."""
    base = choose(ARCHITECTURES, name, "model")
    unknown = set(overrides) - set(type(base).__dataclass_fields__)
    if unknown:
        raise ConfigError(f"model {name!r} has no option(s) {sorted(unknown)}")
    return replace(base, **overrides)


def build_model(config: Config) -> nn.Module:
    _, cls = choose(_FAMILIES, config.family, "model family")
    return cls(config)


def create_model(name: str = "mit_b2", **overrides) -> nn.Module:
    """Build a registered architecture, e.g. ``create_model("mit_b0", num_classes=10, text_dim=384)``."""
    return build_model(model_config(name, **overrides))


def config_from_dict(d: dict) -> Config:
    """Rebuild a config saved by ``to_dict`` (checkpoints); the family key picks the class."""
    cfg_cls, _ = choose(_FAMILIES, d.get("family", "segformer"), "model family")
    return cfg_cls.from_dict(d)
