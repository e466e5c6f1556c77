"""The text side of a training run: :func:`dunemap.knowledge.sources.training_text` for a TrainConfig."""

from __future__ import annotations

import numpy as np

from dunemap.knowledge.catalog import Catalog
from dunemap.knowledge.sources import training_text
from dunemap.training.config import TrainConfig


def resolve_text(config: TrainConfig, catalog: Catalog) -> tuple[np.ndarray | None, dict]:
    """Embeddings for ``config.text`` (None for the plain SegFormer) and a provenance dict for the checkpoint."""
    return training_text(config.text, catalog, config.encoder, config.seed, config.text_embeddings, config.head)
