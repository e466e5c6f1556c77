"""Models: the text-fused SegFormer family, built through one registry-backed factory."""

from dunemap.models.segformer import MODEL_VARIANTS, ModelConfig, TextFusedSegFormer, build_model, create_model, model_config

__all__ = ["MODEL_VARIANTS", "ModelConfig", "TextFusedSegFormer", "build_model", "create_model", "model_config"]
