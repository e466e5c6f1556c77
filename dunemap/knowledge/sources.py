"""The one text-source resolver: which (K, D) class-text matrix a model fuses, at training, evaluation and mapping.

At training the text is the catalog encoded by an encoder (mode ``catalog``), a text ablation
(``random``, ``shuffled``, ``none``) or a user-supplied matrix (``--text-embeddings``, mode
``matrix``). The matrix and its provenance are stored in the checkpoint, so evaluating or mapping
needs nothing else. When a checkpoint is loaded:

- a dunemap checkpoint uses the text it carries. ``--text-embeddings`` with the same rows is
  accepted; other rows are an error unless ``replace_text`` is given (a different matrix silently
  changes the map);
- a published MADS ``state_dict`` carries no text: ``--text-embeddings`` is required for a model
  that fuses text;
- ``--catalog`` is checked against the catalog the model was trained with; for an open-vocabulary
  model (``head="text"``) a different catalog becomes the new class set, encoded with the
  checkpoint's encoder. A user-supplied matrix is never re-encoded: it cannot describe new classes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dunemap.errors import CheckpointError, ConfigError
from dunemap.knowledge.catalog import Catalog, load_catalog
from dunemap.knowledge.matrix import array_sha256, load_text_npy, normalize_rows
from dunemap.knowledge.text import (
    MATRIX_MODE,
    TEXT_MODES,
    TextSource,
    check_text_source,
    make_text_embeddings,
    matrix_text_source,
)
from dunemap.registry import choose

log = logging.getLogger(__name__)

TextInput = np.ndarray | str | os.PathLike  # a (K, D) matrix, or the .npy file holding it


@dataclass
class ResolvedText:
    """The text a loaded model uses, its classes and the provenance recorded for it."""

    matrix: np.ndarray | None  # float32 (K, D) unit rows; None for a model without text
    class_names: list[str]
    colors: list[tuple[int, int, int]]
    source: dict  # TextSource.to_dict() plus "catalog" and, for re-encodable text, "encoder_spec"


def training_text(mode: str, catalog: Catalog, encoder: str, seed: int = 0,
                  text_embeddings: str | os.PathLike | None = None, head: str = "linear",
                  ) -> tuple[np.ndarray | None, dict]:
    """The text a new model is trained with (None for the plain SegFormer) and its provenance for the checkpoint."""
    choose(TEXT_MODES, mode, "text mode")
    if head == "text" and mode == "none":
        raise ConfigError("--head text scores pixels against class texts; it cannot be combined with --text none")
    if text_embeddings is not None:
        if mode != "catalog":
            raise ConfigError(f"--text-embeddings replaces the catalog text; it cannot be combined with --text {mode}")
        matrix, src = matrix_text_source(text_embeddings, catalog)
        source = src.to_dict()
        source["file"] = Path(text_embeddings).name  # where the rows came from; the rows themselves are stored
    else:
        matrix, src = make_text_embeddings(mode, catalog, encoder=encoder, seed=seed)
        source = src.to_dict()
        source["encoder_spec"] = encoder  # how to encode a new catalog (open vocabulary)
    source["catalog"] = catalog.to_dict()
    return matrix, source


def _given_matrix(text: TextInput) -> tuple[np.ndarray, str]:
    if isinstance(text, (str, os.PathLike)):
        return load_text_npy(text), str(text)
    return normalize_rows(np.asarray(text, dtype=np.float32), "given"), "the given text embeddings"


def _reencodable(source: dict) -> bool:
    spec = source.get("encoder_spec") or ""
    return source.get("mode") == "catalog" and bool(spec) and not spec.startswith("npy:")


def _new_vocabulary(where: str, stored: np.ndarray | None, source: dict, catalog: Catalog) -> tuple[np.ndarray, dict]:
    """The text of ``catalog`` for an open-vocabulary model: classes whose text the model was trained with keep
    their stored rows bit for bit (so their logits do not change), the others are encoded by the model's encoder."""
    if not _reencodable(source):
        kind = "a user-supplied matrix" if source.get("mode") == MATRIX_MODE or \
            str(source.get("encoder_spec", "")).startswith("npy:") else f"text mode {source.get('mode')!r}"
        raise CheckpointError(f"{where}: a new catalog needs a model whose text was encoded from its catalog; "
                              f"this one was trained with {kind}, which cannot encode new classes")
    matrix, src = make_text_embeddings("catalog", catalog, encoder=source["encoder_spec"])
    reused = 0
    if stored is not None and "catalog" in source:
        trained = {text: i for i, text in enumerate(Catalog.from_dict(source["catalog"], where).texts)}
        for i, text in enumerate(catalog.texts):
            if text in trained and trained[text] < stored.shape[0] and stored.shape[1] == matrix.shape[1]:
                matrix[i] = stored[trained[text]]
                reused += 1
    log.info("%s: %d of %d class texts as trained, %d newly encoded", where, reused, catalog.num_classes,
             catalog.num_classes - reused)
    src = TextSource("catalog", src.encoder, catalog.sha256, array_sha256(matrix), src.dim, catalog.num_classes)
    return matrix, {**src.to_dict(), "encoder_spec": source["encoder_spec"], "catalog": catalog.to_dict()}


def checkpoint_text(
    where: str,
    stored: np.ndarray | None,
    source: dict,
    class_names: list[str],
    colors: list[tuple[int, int, int]],
    *,
    uses_text: bool,
    open_vocabulary: bool = False,
    text_embeddings: TextInput | None = None,
    catalog: str | os.PathLike | Catalog | None = None,
    replace_text: bool = False,
) -> ResolvedText:
    """Resolve the text of a loaded checkpoint (``where`` names it in errors); see the module docstring."""
    names, colors, source = list(class_names), list(colors), dict(source or {})
    matrix = None if stored is None else np.asarray(stored, dtype=np.float32)
    if catalog is not None:
        cat = catalog if isinstance(catalog, Catalog) else load_catalog(catalog)
        if not source:
            raise CheckpointError(f"{where}: the checkpoint records no text source to check catalog {cat.source} against")
        names, colors = list(cat.names), [tuple(c) for c in cat.colors]
        if open_vocabulary and source.get("catalog_sha256") != cat.sha256:
            matrix, source = _new_vocabulary(where, matrix, source, cat)
        else:
            check_text_source(source, cat)
    if text_embeddings is not None:
        given, name = _given_matrix(text_embeddings)
        if not uses_text:
            log.warning("%s: the model fuses no text; ignoring %s", where, name)
        elif matrix is not None and not replace_text:
            if given.shape != matrix.shape or not np.array_equal(given, matrix):
                raise CheckpointError(
                    f"{where}: the checkpoint carries its own class text ({matrix.shape[0]} x {matrix.shape[1]}, "
                    f"sha256 {array_sha256(matrix)[:12]}) and {name} holds other rows "
                    f"({given.shape[0]} x {given.shape[1]}, sha256 {array_sha256(given)[:12]}); "
                    "pass --replace-text to use them instead")
        else:
            if matrix is not None:
                log.warning("%s: replacing the checkpoint's class text by %s", where, name)
            matrix = given
            source = {**TextSource(MATRIX_MODE, "", source.get("catalog_sha256", ""), array_sha256(given),
                                   int(given.shape[1]), int(given.shape[0])).to_dict(),
                      **({"catalog": source["catalog"]} if "catalog" in source else {}),
                      "file": Path(name).name if name != "the given text embeddings" else ""}
    if not uses_text:
        return ResolvedText(None, names, colors, source)
    if matrix is None:
        raise CheckpointError(f"{where}: the model fuses text but the checkpoint has none; pass --text-embeddings FILE.npy")
    if matrix.shape[0] != len(names):
        raise CheckpointError(f"{where}: {matrix.shape[0]} text embeddings for {len(names)} classes")
    return ResolvedText(matrix, names, colors, source)
