"""Predictor: bf16 weights rounded once give exactly the logits of per-call autocast; inputs in any layout."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from dunemap.knowledge.catalog import load_catalog
from dunemap.models import create_model
from dunemap.models.checkpoint import save_checkpoint
from dunemap.runtime import cast_autocast_weights, load_predictor

CONV_LINEAR = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d)


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "unet":
        return create_model("unet", num_classes=10, in_channels=8, base_width=8, depth=2).eval()
    model = create_model(name, num_classes=10, in_channels=8, text_dim=12).eval()
    model.set_text(torch.nn.functional.normalize(torch.randn(10, 12), dim=1))
    return model


def _save(tmp_path: Path, model: torch.nn.Module) -> Path:
    catalog = load_catalog()
    return save_checkpoint(tmp_path / "m.pth", model, list(catalog.names), [tuple(c) for c in catalog.colors])


@pytest.mark.parametrize("name", ["mit_tiny", "unet"])
def test_bf16_predictor_equals_per_call_autocast_exactly(tmp_path: Path, name: str) -> None:
    model = _model(name)
    x = torch.randn(2, 8, 70, 90)  # not a multiple of 32: the model pads and crops
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = copy.deepcopy(model).to(memory_format=torch.channels_last)(x).float()
    predictor = load_predictor(_save(tmp_path, model), precision="bf16")
    got = predictor.predict(x)
    assert got.dtype == torch.float32 and got.shape == (2, 10, 70, 90)
    assert torch.equal(got, expected)


def test_bf16_predictor_rounds_only_what_autocast_rounds(tmp_path: Path) -> None:
    predictor = load_predictor(_save(tmp_path, _model("mit_tiny")), precision="bf16")
    assert predictor.input_dtype == torch.bfloat16
    dtypes = {type(m): {p.dtype for p in m.parameters(recurse=False)} for m in predictor.model.modules()}
    for kind, found in dtypes.items():
        if found:
            assert found == ({torch.bfloat16} if issubclass(kind, CONV_LINEAR) else {torch.float32}), kind
    assert predictor.model.text_embeddings.dtype == torch.float32
    assert predictor.model.decode_head.batch_norm.running_var.dtype == torch.float32


def test_input_prepared_as_bf16_channels_last_gives_the_same_logits(tmp_path: Path) -> None:
    predictor = load_predictor(_save(tmp_path, _model("mit_tiny")), precision="bf16")
    x = torch.randn(1, 8, 64, 96)
    ready = x.to(dtype=torch.bfloat16, memory_format=torch.channels_last)
    assert ready.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(predictor.predict(ready), predictor.predict(x))


def test_fp32_predictor_keeps_float32_weights_and_matches_the_model(tmp_path: Path) -> None:
    model = _model("mit_tiny")
    predictor = load_predictor(_save(tmp_path, model), precision="fp32")
    assert predictor.input_dtype == torch.float32
    assert {p.dtype for p in predictor.model.parameters()} == {torch.float32}
    x = torch.randn(1, 8, 48, 40)
    with torch.no_grad():
        expected = model(x)
    assert torch.allclose(predictor.predict(x), expected, atol=1e-4)


def test_cast_autocast_weights_is_in_place_and_leaves_norms() -> None:
    model = _model("mit_tiny")
    assert cast_autocast_weights(model) is model
    assert model.patch_embeds[0].proj.weight.dtype == torch.bfloat16
    assert model.patch_embeds[0].norm.weight.dtype == torch.float32
