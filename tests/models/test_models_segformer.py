"""Every registered variant: output shapes for any H, W, finite values, a gradient on every parameter."""

from __future__ import annotations

import pytest
import torch

from dunemap.errors import ConfigError
from dunemap.models import ARCHITECTURES, MODEL_VARIANTS, create_model


@pytest.mark.parametrize("name", sorted(MODEL_VARIANTS))
@pytest.mark.parametrize("fusion,head", [("cross_attn", "linear"), ("none", "linear"), ("none", "text")])
def test_variant_shapes_and_gradients(name: str, fusion: str, head: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, in_channels=8, text_dim=24, fusion=fusion, head=head)
    model.train()
    text = torch.randn(5, 24)
    x = torch.randn(2, 8, 37, 50)  # not a multiple of 32: padded inside, cropped back
    logits = model(x, text)
    assert logits.shape == (2, 5, 37, 50)
    assert torch.isfinite(logits).all()
    logits.square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, f"parameters without a gradient: {no_grad[:5]}"
    assert hasattr(model, "alignment_module") == (fusion == "cross_attn")


def test_text_changes_the_prediction_only_when_fused() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 8, 64, 64)
    fused = create_model("mit_tiny", num_classes=3, in_channels=8, text_dim=16).eval()
    plain = create_model("mit_tiny", num_classes=3, in_channels=8, fusion="none").eval()
    t1, t2 = torch.randn(3, 16), torch.randn(3, 16)
    with torch.no_grad():
        assert not torch.allclose(fused(x, t1), fused(x, t2))
        assert torch.equal(plain(x), plain(x, t1))


def test_batched_text_and_buffer_text_agree() -> None:
    torch.manual_seed(1)
    model = create_model("mit_tiny", num_classes=3, in_channels=4, text_dim=16).eval()
    x, text = torch.randn(2, 4, 32, 32), torch.randn(3, 16)
    model.set_text(text)
    with torch.no_grad():
        assert torch.allclose(model(x), model(x, text.expand(2, -1, -1)), atol=1e-6)


def test_unet_baseline_shapes_and_gradients() -> None:
    model = create_model("unet", num_classes=4, in_channels=8, base_width=8, depth=3).train()
    logits = model(torch.randn(2, 8, 37, 50))
    assert logits.shape == (2, 4, 37, 50)
    logits.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert set(MODEL_VARIANTS) < set(ARCHITECTURES)


def test_text_head_scores_any_number_of_classes() -> None:
    torch.manual_seed(0)
    model = create_model("mit_tiny", num_classes=3, in_channels=4, text_dim=16, head="text", fusion="none").eval()
    x = torch.randn(1, 4, 32, 32)
    text = torch.randn(4, 16)
    with torch.no_grad():
        three = model(x, text[:3])
        four = model(x, text)
    assert three.shape[1] == 3 and four.shape[1] == 4
    assert not hasattr(model.decode_head, "linear_pred")
    torch.testing.assert_close(four[:, :3], three, atol=1e-5, rtol=0)  # a new class leaves the others' logits


def test_text_head_refuses_cross_attention_over_the_class_texts() -> None:
    with pytest.raises(ConfigError, match="class-independent features"):
        create_model("mit_tiny", num_classes=3, in_channels=4, text_dim=16, head="text", fusion="cross_attn")


def test_fusion_after_an_earlier_stage() -> None:
    model = create_model("mit_tiny", num_classes=3, in_channels=4, text_dim=16, fusion_stage=1)
    assert model.alignment_module.vis_proj_q.in_features == model.config.embed_dims[1]
    assert model(torch.randn(1, 4, 32, 32), torch.randn(3, 16)).shape == (1, 3, 32, 32)


def test_bad_options_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="unknown model 'mit_b9'.*mit_b0"):
        create_model("mit_b9")
    with pytest.raises(ConfigError, match="fusion"):
        create_model("mit_tiny", fusion="film")
    model = create_model("mit_tiny", in_channels=4, text_dim=16)
    with pytest.raises(ConfigError, match=r"expected \(B, 4, H, W\)"):
        model(torch.randn(1, 3, 32, 32), torch.randn(10, 16))
    with pytest.raises(ConfigError, match="no text embeddings"):
        model(torch.randn(1, 4, 32, 32))
