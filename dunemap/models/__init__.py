"""Models: the text-fused SegFormer family and a U-Net baseline, built through one registry-backed factory."""

from dunemap.models.registry import ARCHITECTURES, build_model, config_from_dict, create_model, model_config
from dunemap.models.segformer import MODEL_VARIANTS, ModelConfig, TextFusedSegFormer
from dunemap.models.unet import UNet, UNetConfig

__all__ = [
    "ARCHITECTURES", "MODEL_VARIANTS", "ModelConfig", "TextFusedSegFormer", "UNet", "UNetConfig",
    "build_model", "config_from_dict", "create_model", "model_config",
]
