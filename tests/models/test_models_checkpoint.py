"""Published MADS weights and dunemap's own checkpoints: loading, inference of sizes, round trips, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dunemap.errors import CheckpointError
from dunemap.models import create_model
from dunemap.models.checkpoint import infer_mads_config, load_checkpoint, save_checkpoint
from dunemap.runtime import load_predictor


def _fixture_input() -> torch.Tensor:
    x = np.random.default_rng(7).standard_normal((64, 512, 512), dtype=np.float32)
    x = x / np.linalg.norm(x, axis=0, keepdims=True)
    return torch.from_numpy(x)[None]


def test_mads_fixture_logits_are_reproduced(mads) -> None:
    text = np.load(mads.text)
    loaded = load_checkpoint(mads.weights, text_embeddings=text)  # float16 tensors, loaded as float32
    assert loaded.config.name == "mit_b0"
    assert loaded.config.heads == (1, 2, 5, 8) and loaded.config.text_dim == 512
    with torch.no_grad():
        logits = loaded.model(_fixture_input())[0].numpy()
    assert logits.shape == (10, 512, 512)
    expected = np.load(mads.logits_every4)
    assert expected.shape == (10, 128, 128)
    assert np.abs(logits[:, ::4, ::4] - expected).max() < 1e-4  # the README's promise


def test_full_published_layout_loads_without_missing_or_unexpected_keys(mads) -> None:
    shapes = json.loads(mads.full_shapes.read_text())
    state = {k: torch.zeros(v, dtype=torch.int64 if k.endswith("num_batches_tracked") else torch.float32)
             for k, v in shapes.items()}
    config = infer_mads_config(state)
    assert config.name == "mit_b2"
    assert (config.embed_dims, config.depths, config.heads, config.sr_ratios) == (
        (64, 128, 256, 512), (3, 4, 6, 3), (1, 2, 4, 8), (8, 4, 2, 1))
    assert (config.in_channels, config.num_classes, config.decoder_dim, config.text_dim, config.fusion_stage) == (
        64, 10, 256, 512, 3)
    model = create_model("mit_b2")
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == shapes


def test_dunemap_checkpoint_carries_everything(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("mit_tiny", num_classes=3, in_channels=6, text_dim=12).eval()
    model.set_text(torch.nn.functional.normalize(torch.randn(3, 12), dim=1))
    names, colors = ["a", "b", "c"], [(1, 2, 3), (4, 5, 6), (7, 8, 9)]
    path = save_checkpoint(tmp_path / "m.pth", model, names, colors, text_source={"mode": "catalog"},
                           metrics={"miou": 0.5})
    assert [p.name for p in tmp_path.iterdir()] == ["m.pth"]  # no temp file left behind
    # the same checkpoint saved again, under another name, is the same bytes: its SHA-256 finds its cached exports
    again = save_checkpoint(tmp_path / "sub" / "other.pth", model, names, colors, text_source={"mode": "catalog"},
                            metrics={"miou": 0.5})
    assert again.read_bytes() == path.read_bytes()
    (tmp_path / "sub" / "other.pth").unlink()
    (tmp_path / "sub").rmdir()
    loaded = load_checkpoint(path)
    assert loaded.class_names == names and loaded.colors == colors
    assert loaded.text_source == {"mode": "catalog"} and loaded.metrics == {"miou": 0.5}
    x = torch.randn(1, 6, 40, 40)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))
    predictor = load_predictor(path, precision="fp32")
    assert torch.allclose(predictor.predict(x), model(x), atol=1e-4)
    bf16 = load_predictor(path, precision="bf16").predict(x)
    assert bf16.dtype == torch.float32 and (bf16.argmax(1) == model(x).argmax(1)).float().mean() > 0.9


def test_bad_checkpoints_are_one_line_errors(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt.pth: not a readable PyTorch checkpoint"):
        load_checkpoint(corrupt)
    with pytest.raises(CheckpointError, match="missing.pth: checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pth")
    partial = tmp_path / "partial.pth"
    state = create_model("mit_tiny").state_dict()
    del state["decode_head.linear_fuse.weight"]
    torch.save(state, partial)
    with pytest.raises(CheckpointError, match="partial.pth: weights do not fit.*linear_fuse"):
        load_checkpoint(partial, text_embeddings=np.ones((10, 512), np.float32))
    torch.save(create_model("mit_tiny").state_dict(), tmp_path / "notext.pth")
    with pytest.raises(CheckpointError, match="text-embeddings"):
        load_checkpoint(tmp_path / "notext.pth")
