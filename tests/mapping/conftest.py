"""Fixtures for the mapping tests: seeded embedding rasters and tiny real checkpoints (mit_tiny)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from mapping_helpers import smooth_unit_vectors, write_raster

from dunemap.io.aef import quantize
from dunemap.knowledge.catalog import load_catalog
from dunemap.models import create_model
from dunemap.models.checkpoint import save_checkpoint


@pytest.fixture
def aef_raster(tmp_path: Path) -> Callable[..., Path]:
    """Factory: an int8 AEF raster of smooth vectors; ``invalid`` (H, W) marks nodata pixels."""

    def make(height: int = 96, width: int = 80, seed: int = 0, invalid: np.ndarray | None = None,
             name: str = "aef.tif", bottom_up: bool = False) -> Path:
        valid = None if invalid is None else ~invalid
        q = quantize(smooth_unit_vectors(height, width, seed), valid)
        return write_raster(tmp_path / name, q, nodata=-128, bottom_up=bottom_up)

    return make


def _save(path: Path, model: torch.nn.Module) -> Path:
    catalog = load_catalog()
    return save_checkpoint(path, model, list(catalog.names), [tuple(c) for c in catalog.colors])


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 10-class mit_tiny fusion model saved as a dunemap checkpoint."""
    torch.manual_seed(0)
    model = create_model("mit_tiny", num_classes=10, text_dim=32).eval()
    model.set_text(torch.nn.functional.normalize(torch.randn(10, 32), dim=1))
    return _save(tmp_path_factory.mktemp("ckpt") / "tiny.pth", model)
