"""The open-vocabulary text-as-classifier head: any number of classes, scaled cosine logits, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from dunemap.errors import InputError
from dunemap.models.openvocab import TextClassifierHead


@pytest.fixture
def head() -> TextClassifierHead:
    torch.manual_seed(0)
    return TextClassifierHead(feat_dim=16, text_dim=384, embed_dim=32).eval()


def test_same_weights_score_ten_then_eleven_classes(head, default_encoded, eleven_encoded):
    features = torch.randn(2, 16, 8, 12, generator=torch.Generator().manual_seed(1))
    text10 = torch.from_numpy(default_encoded[0])
    text11 = torch.from_numpy(eleven_encoded[0])
    with torch.no_grad():
        out10 = head(features, text10)
        out11 = head(features, text11)
    assert out10.shape == (2, 10, 8, 12) and out11.shape == (2, 11, 8, 12)
    # adding a class leaves the other classes' scores as they were (up to float noise of re-encoding)
    torch.testing.assert_close(out11[:, :10], out10, atol=1e-3, rtol=0)
    assert not torch.allclose(out11[:, 10], out11[:, 9])


def test_logits_are_scaled_cosines(head):
    features = torch.randn(1, 16, 4, 4)
    text = torch.randn(5, 384)
    with torch.no_grad():
        logits = head(features, text)
        pix = head.embed_pixels(features)
        txt = head.embed_text(text)
    assert head.scale.item() == pytest.approx(1 / 0.07, rel=1e-5)
    assert logits.abs().max() <= head.scale.item() + 1e-4
    expected = head.scale * torch.einsum("jhw,kj->khw", pix[0], txt)
    torch.testing.assert_close(logits[0], expected)


def test_logit_scale_is_clamped_at_one_hundred(head):
    with torch.no_grad():
        head.logit_scale.fill_(10.0)
    assert head.scale.item() == pytest.approx(100.0)
    with torch.no_grad():
        head.logit_scale.fill_(-3.0)
    assert head.scale.item() == pytest.approx(1.0)
    assert math.isclose(TextClassifierHead(4, 4).logit_scale.item(), math.log(1 / 0.07), rel_tol=1e-6)


def test_batched_text_matches_shared_text(head):
    features = torch.randn(3, 16, 5, 5)
    text = torch.randn(7, 384)
    with torch.no_grad():
        shared = head(features, text)
        batched = head(features, text.expand(3, -1, -1))
        single = head(features, text[None])
    torch.testing.assert_close(shared, batched)
    torch.testing.assert_close(shared, single)


def test_every_parameter_gets_a_gradient():
    head = TextClassifierHead(8, 12, embed_dim=6).train()
    logits = head(torch.randn(2, 8, 4, 4), torch.randn(3, 12))
    torch.nn.functional.cross_entropy(logits, torch.randint(0, 3, (2, 4, 4))).backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_shape_errors_name_the_expected_shape(head):
    with pytest.raises(InputError, match=r"\(K, 384\)"):
        head(torch.randn(1, 16, 4, 4), torch.randn(10, 512))
    with pytest.raises(InputError, match=r"\(B, 16, H, W\)"):
        head(torch.randn(1, 8, 4, 4), torch.randn(10, 384))
    with pytest.raises(InputError, match="does not match feature batch"):
        head(torch.randn(2, 16, 4, 4), torch.randn(3, 10, 384))
