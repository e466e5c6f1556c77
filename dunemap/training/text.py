"""The text side of a training run: which (K, D) embeddings the model fuses, and their provenance."""

from __future__ import annotations

import hashlib

import numpy as np

from dunemap.errors import ConfigError
from dunemap.knowledge.catalog import Catalog
from dunemap.knowledge.text import TEXT_MODES, load_text_npy, make_text_embeddings
from dunemap.training.config import TrainConfig


def resolve_text(config: TrainConfig, catalog: Catalog) -> tuple[np.ndarray | None, dict]:
    """Embeddings for ``config.text`` (None for the plain SegFormer) and a provenance dict for the checkpoint."""
    if config.text not in TEXT_MODES:
        raise ConfigError(f"unknown text mode {config.text!r}; valid: {', '.join(sorted(TEXT_MODES))}")
    if config.text_embeddings is not None:
        if config.text != "catalog":
            raise ConfigError(f"--text-embeddings replaces the catalog text; it cannot be combined with --text {config.text}")
        text = load_text_npy(config.text_embeddings, catalog.num_classes)
        source = {
            "mode": "file",
            "encoder": f"npy:{config.text_embeddings.name}",
            "catalog_sha256": catalog.sha256,
            "embeddings_sha256": hashlib.sha256(np.ascontiguousarray(text).tobytes()).hexdigest(),
            "dim": int(text.shape[1]),
        }
    else:
        text, src = make_text_embeddings(config.text, catalog, encoder=config.encoder, seed=config.seed)
        source = src.to_dict()
    source["catalog"] = catalog.to_dict()
    return text, source
