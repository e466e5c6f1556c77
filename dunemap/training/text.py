"""The text side of a training run: which (K, D) embeddings the model fuses, and their provenance."""

from __future__ import annotations

import numpy as np

from dunemap.errors import ConfigError
from dunemap.knowledge.catalog import Catalog
from dunemap.knowledge.text import TEXT_MODES, make_text_embeddings
from dunemap.training.config import TrainConfig


def resolve_text(config: TrainConfig, catalog: Catalog) -> tuple[np.ndarray | None, dict]:
    """Embeddings for ``config.text`` (None for the plain SegFormer) and a provenance dict for the checkpoint."""
    if config.text not in TEXT_MODES:
        raise ConfigError(f"unknown text mode {config.text!r}; valid: {', '.join(sorted(TEXT_MODES))}")
    encoder = config.encoder
    if config.text_embeddings is not None:
        if config.text != "catalog":
            raise ConfigError(f"--text-embeddings replaces the catalog text; it cannot be combined with --text {config.text}")
        encoder = f"npy:{config.text_embeddings}"  # the .npy "encoder" checks rows against the catalog
    if config.head == "text" and config.text == "none":
        raise ConfigError("--head text scores pixels against class texts; it cannot be combined with --text none")
    text, src = make_text_embeddings(config.text, catalog, encoder=encoder, seed=config.seed)
    source = src.to_dict()
    source["encoder_spec"] = encoder  # how to re-encode a new catalog (open vocabulary)
    source["catalog"] = catalog.to_dict()
    return text, source
