"""Shared fixtures for the knowledge tests: one MiniLM encoding per session, catalog writers, the seed's text file."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import yaml

from dunemap.knowledge.catalog import Catalog, load_catalog
from dunemap.knowledge.encoders import TextEncoder, get_encoder

EXTRA_CLASS = {
    "id": 10,
    "name": "yardang",
    "label": "Yardang",
    "color": [102, 51, 0],
    "description": "Streamlined wind-eroded ridges of cohesive sediment or soft rock, aligned with the "
                   "prevailing wind, separated by scoured troughs, with no sand accumulation.",
}


def _default_class_dicts() -> list[dict]:
    return [c.to_dict() for c in load_catalog().classes]


@pytest.fixture
def default_classes() -> list[dict]:
    """The default catalog's classes as plain dicts, ready to edit into a user catalog."""
    return _default_class_dicts()


@pytest.fixture(scope="session")
def text_cache(tmp_path_factory) -> Path:
    """A text cache directory shared by the whole session (never the user's ~/.cache)."""
    return tmp_path_factory.mktemp("text_cache")


@pytest.fixture(scope="session")
def minilm() -> TextEncoder:
    """One MiniLM encoder instance for the session, so the model loads at most once."""
    return get_encoder("minilm")


def _single_thread(fn):
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def default_encoded(minilm, text_cache):
    """(matrix, TextSource) of the default catalog encoded by MiniLM, written to the session cache."""
    from dunemap.knowledge.text import encode_catalog

    return _single_thread(lambda: encode_catalog(load_catalog(), minilm, cache_dir=text_cache))


@pytest.fixture
def extra_class() -> dict:
    return dict(EXTRA_CLASS)


@pytest.fixture(scope="session")
def eleven_catalog(tmp_path_factory) -> Catalog:
    """A user catalog: the default 10 classes plus a yardang class."""
    path = tmp_path_factory.mktemp("catalogs") / "eleven.yaml"
    path.write_text(yaml.safe_dump({"version": 2, "name": "eleven", "classes": _default_class_dicts() + [EXTRA_CLASS]}))
    return load_catalog(path)


@pytest.fixture(scope="session")
def eleven_encoded(minilm, text_cache, eleven_catalog):
    from dunemap.knowledge.text import encode_catalog

    return _single_thread(lambda: encode_catalog(eleven_catalog, minilm, cache_dir=text_cache))


@pytest.fixture
def write_catalog(tmp_path) -> Callable[..., Path]:
    """Write a catalog file from a list of class dicts (YAML by default) and return its path."""

    def write(classes: list[dict], name: str = "cat.yaml", **top) -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump({"version": 1, **top, "classes": classes}))
        return path

    return write


@pytest.fixture
def seed_text(mads) -> Path:
    """The seed's published text embeddings (10, 512), from the repository's fixtures."""
    return mads.text
