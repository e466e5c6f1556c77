"""Maps use the model's own settings: the checkpoint records its training tile, and map's windows follow it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from mapping_helpers import smooth_unit_vectors, write_raster

from dunemap.errors import ConfigError
from dunemap.knowledge.catalog import load_catalog
from dunemap.mapping.config import FALLBACK_WINDOW, MapConfig, default_stride
from dunemap.mapping.engine import map_raster
from dunemap.models import create_model
from dunemap.models.checkpoint import save_checkpoint
from dunemap.runtime import load_predictor
from dunemap.training import TrainConfig, train


def test_default_stride_keeps_every_pixel_inside_a_window() -> None:
    assert [default_stride(w) for w in (64, 128, 256, 512, 1024)] == [32, 64, 128, 384, 896]
    assert MapConfig(window=128).for_model(None).stride == 64  # --window alone: the stride follows it
    assert MapConfig().for_model(96) == MapConfig(window=96, stride=48)
    with pytest.raises(ConfigError, match="stride 200 must be in 1..window"):
        MapConfig(window=128, stride=200).for_model(None)


def test_a_model_trained_on_64_px_tiles_maps_with_64_px_windows(tiny_dataset: Path, tmp_path: Path, caplog) -> None:
    """The defaults give the same map as the explicit training-tile windows (64 / 32 here)."""
    train(TrainConfig(data_root=tiny_dataset, save_dir=tmp_path / "run", model="mit_tiny", in_channels=16, epochs=1,
                      max_steps_per_epoch=2, batch_size=2, text="random", device="cpu", precision="fp32",
                      progress=False, calibrate=False))
    predictor = load_predictor(tmp_path / "run" / "best_model.pth", precision="fp32")
    assert predictor.train_tile == 64  # the tiny dataset's tiles
    raster = write_raster(tmp_path / "emb.tif", smooth_unit_vectors(96, 80)[:16])
    auto = map_raster(raster, predictor, tmp_path / "auto.tif", MapConfig(progress=False))
    explicit = map_raster(raster, predictor, tmp_path / "explicit.tif", MapConfig(window=64, stride=32, progress=False))
    assert auto.path.read_bytes() == explicit.path.read_bytes()
    with caplog.at_level(logging.WARNING, logger="dunemap"):
        map_raster(raster, predictor, tmp_path / "far.tif", MapConfig(window=256, progress=False))
    assert "window 256 px is far from the 64 px tiles the model was trained on" in caplog.text


def test_a_checkpoint_without_a_record_keeps_the_old_windows(tmp_path: Path, caplog) -> None:
    torch.manual_seed(0)
    model = create_model("mit_tiny", num_classes=10, text_dim=32).eval()
    model.set_text(torch.nn.functional.normalize(torch.randn(10, 32), dim=1))
    catalog = load_catalog()
    path = save_checkpoint(tmp_path / "m.pth", model, list(catalog.names), [tuple(c) for c in catalog.colors])
    predictor = load_predictor(path)
    assert predictor.train_tile is None
    with caplog.at_level(logging.INFO, logger="dunemap"):
        resolved = MapConfig().for_model(predictor.train_tile)
    assert (resolved.window, resolved.stride) == (FALLBACK_WINDOW, 384)
    assert "records no training tile size" in caplog.text
