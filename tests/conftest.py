"""Shared fixtures: the location of ../shared and torch threads kept small."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DUNEMAP_SHARED", REPO.parent / "shared"))

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def mads_dir() -> Path:
    path = SHARED / "fixtures" / "mads"
    assert path.is_dir(), f"checkpoint fixtures not found at {path} (set DUNEMAP_SHARED)"
    return path
