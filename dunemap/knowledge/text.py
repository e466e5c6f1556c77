"""Class text embeddings: encoding a catalog with an on-disk cache, the text ablations, provenance records and their checks."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from dunemap.errors import CheckpointError, ConfigError, InputError
from dunemap.io.atomic import atomic_path
from dunemap.io.outputs import staged_outputs
from dunemap.knowledge.catalog import Catalog, load_catalog
from dunemap.knowledge.encoders import DEFAULT_ENCODER, TextEncoder, get_encoder
from dunemap.knowledge.matrix import array_sha256, load_text_npy, normalize_rows
from dunemap.registry import choose

log = logging.getLogger(__name__)

CACHE_ENV = "DUNEMAP_CACHE"
_CACHE_FORMAT = 1  # bump when the cached array's meaning changes, so old entries are not reused


@dataclass(frozen=True)
class TextSource:
    """Provenance of a model's text inputs: how the (C, D) matrix was made, so it can be rebuilt and checked."""

    mode: str  # one of TEXT_MODES (catalog / random / shuffled / none) or MATRIX_MODE (a user-supplied matrix)
    encoder: str  # encoder identity, e.g. "minilm:1a2b..."; "" for modes none and matrix
    catalog_sha256: str  # Catalog.sha256 of the class texts
    embeddings_sha256: str  # array_sha256 of the matrix handed to the model; "" for mode none
    dim: int  # embedding width D; 0 for mode none
    num_classes: int = 0  # rows C (= catalog classes); 0 when a record did not say
    seed: int | None = None  # RNG seed of the random / shuffled ablations

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> "TextSource":
        """Rebuild from :meth:`to_dict` output; extra keys stored beside it (e.g. a ``catalog``) are ignored."""
        if not isinstance(data, Mapping):
            raise CheckpointError(f"text source {source}: expected a mapping, got {type(data).__name__}")
        optional = {"num_classes", "seed"}
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in data and n not in optional]
        if missing:
            raise CheckpointError(f"text source {source}: missing {', '.join(missing)}")
        return cls(**{n: data[n] for n in names if n in data})


def default_cache_dir() -> Path:
    """``$DUNEMAP_CACHE/text`` when that variable is set, else ``~/.cache/dunemap/text``."""
    root = os.environ.get(CACHE_ENV)
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "dunemap") / "text"


def cache_key(catalog: Catalog, encoder_identity: str) -> str:
    """The cache entry name for a (catalog text, encoder) pair."""
    payload = json.dumps({"format": _CACHE_FORMAT, "catalog": catalog.sha256, "encoder": encoder_identity},
                         sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def _read_cached(path: Path, num_classes: int) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        return load_text_npy(path, num_classes)
    except InputError as exc:
        log.warning("ignoring unusable text cache entry (%s); re-encoding", exc)
        return None


def _write_cached(path: Path, matrix: np.ndarray) -> None:
    try:
        with atomic_path(path) as tmp:
            np.save(tmp, matrix)
    except OSError as exc:
        log.warning("could not write text cache %s (%s); continuing without it", path, exc)


def encode_catalog(catalog: Catalog, encoder: str | TextEncoder = DEFAULT_ENCODER,
                   cache_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, TextSource]:
    """Embed the catalog's class texts: float32 (C, D) unit rows plus their TextSource (mode ``catalog``).

    Results are cached under ``cache_dir`` (default :func:`default_cache_dir`) by a hash of the
    catalog text and the encoder identity, so a repeated call reads the file and loads no model.
    """
    enc = get_encoder(encoder)
    identity = enc.identity
    matrix = None
    path = None
    if enc.cacheable:
        path = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        path = path / f"{cache_key(catalog, identity)}.npy"
        matrix = _read_cached(path, catalog.num_classes)
        if matrix is not None:
            log.debug("text cache hit %s (%s, catalog %s)", path, identity, catalog.sha256[:12])
    if matrix is None:
        matrix = enc.encode(catalog.texts)
        if matrix.shape[0] != catalog.num_classes:
            raise InputError(f"text encoder {identity}: returned {matrix.shape[0]} rows for "
                             f"{catalog.num_classes} classes")
        if path is not None:
            _write_cached(path, matrix)
    source = TextSource(mode="catalog", encoder=identity, catalog_sha256=catalog.sha256,
                        embeddings_sha256=array_sha256(matrix), dim=int(matrix.shape[1]),
                        num_classes=catalog.num_classes)
    return matrix, source


def derangement(n: int, seed: int) -> np.ndarray:
    """A seeded permutation of ``range(n)`` with no fixed point (n >= 2), by rejection sampling."""
    if n < 2:
        raise ConfigError(f"a derangement needs at least 2 items, got {n}")
    rng = np.random.default_rng(seed)
    while True:  # accepted with probability ~1/e per draw
        perm = rng.permutation(n)
        if not (perm == np.arange(n)).any():
            return perm


def random_unit_rows(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Seeded Gaussian rows normalised to unit length, float32."""
    g = np.random.default_rng(seed).standard_normal(shape)
    return normalize_rows(g, f"random(seed={seed})")


def _mode_catalog(catalog, encoder, seed, cache_dir):
    return encode_catalog(catalog, encoder, cache_dir)


def _mode_random(catalog, encoder, seed, cache_dir):
    reference, src = encode_catalog(catalog, encoder, cache_dir)  # only its shape is used
    matrix = random_unit_rows(reference.shape, seed)
    return matrix, TextSource("random", src.encoder, catalog.sha256, array_sha256(matrix), src.dim,
                              catalog.num_classes, seed)


def _mode_shuffled(catalog, encoder, seed, cache_dir):
    reference, src = encode_catalog(catalog, encoder, cache_dir)
    matrix = np.ascontiguousarray(reference[derangement(catalog.num_classes, seed)])  # row i = text of class perm[i]
    return matrix, TextSource("shuffled", src.encoder, catalog.sha256, array_sha256(matrix), src.dim,
                              catalog.num_classes, seed)


def _mode_none(catalog, encoder, seed, cache_dir):
    return None, TextSource("none", "", catalog.sha256, "", 0, catalog.num_classes)


# Text ablations: name -> builder(catalog, encoder, seed, cache_dir) -> (matrix | None, TextSource)
TEXT_MODES: dict[str, Callable[..., tuple[np.ndarray | None, TextSource]]] = {
    "catalog": _mode_catalog,  # the encoded expert descriptions
    "random": _mode_random,  # same shape, seeded Gaussian unit rows: is it the text or just extra parameters?
    "shuffled": _mode_shuffled,  # catalog rows given to the wrong classes (a seeded derangement)
    "none": _mode_none,  # no text at all: the plain SegFormer
}


MATRIX_MODE = "matrix"  # a user-supplied (C, D) matrix: stored in the checkpoint, never re-encoded


def matrix_text_source(path: str | os.PathLike, catalog: Catalog) -> tuple[np.ndarray, TextSource]:
    """A user's (C, D) text matrix for ``catalog`` (one row per class) and its TextSource (mode ``matrix``)."""
    matrix = load_text_npy(path, catalog.num_classes)
    return matrix, TextSource(MATRIX_MODE, "", catalog.sha256, array_sha256(matrix), int(matrix.shape[1]),
                              catalog.num_classes)


def make_text_embeddings(mode: str, catalog: Catalog, encoder: str | TextEncoder = DEFAULT_ENCODER, seed: int = 0,
                         cache_dir: str | os.PathLike | None = None) -> tuple[np.ndarray | None, TextSource]:
    """The text matrix for a text ablation ``mode`` (see ``TEXT_MODES``) and its TextSource; ``none`` gives None."""
    builder = choose(TEXT_MODES, mode, "text mode")
    return builder(catalog, encoder, int(seed), cache_dir)


def check_text_source(saved: Mapping[str, Any], catalog: Catalog, encoder: str | TextEncoder | None = None) -> None:
    """Raise CheckpointError when a checkpoint's recorded text source does not match ``catalog`` / ``encoder``.

    ``encoder=None`` skips the encoder check (when the checkpoint's own embeddings are used).
    Mode ``none`` only requires the class count to match, since no text reaches the model.
    """
    src = saved if isinstance(saved, TextSource) else TextSource.from_dict(saved, "in checkpoint")
    if src.num_classes and src.num_classes != catalog.num_classes:
        raise CheckpointError(f"checkpoint was trained with {src.num_classes} classes but catalog {catalog.source} "
                              f"has {catalog.num_classes}; pass the catalog it was trained with")
    if src.mode == "none":
        return
    if src.catalog_sha256 != catalog.sha256:
        raise CheckpointError(f"checkpoint text came from catalog sha256 {src.catalog_sha256[:12]} but catalog "
                              f"{catalog.source} has {catalog.sha256[:12]}; the class descriptions differ, "
                              "pass the catalog it was trained with")
    if encoder is not None:
        if src.mode == MATRIX_MODE:
            raise CheckpointError("checkpoint text is a user-supplied matrix, not an encoding; it cannot be "
                                  f"checked against encoder {encoder}")
        identity = get_encoder(encoder).identity
        if identity != src.encoder:
            raise CheckpointError(f"checkpoint text was encoded by {src.encoder} but encoder {identity} was given; "
                                  "use the same encoder or the checkpoint's own embeddings")


def sidecar_path(npy_path: str | os.PathLike) -> Path:
    """``FILE.json`` beside ``FILE.npy``: where the TextSource of an exported matrix is written."""
    return Path(npy_path).with_suffix(".json")


def read_sidecar(npy_path: str | os.PathLike) -> TextSource | None:
    """The TextSource recorded beside an exported .npy, or None when there is no sidecar."""
    side = sidecar_path(npy_path)
    if not side.is_file():
        return None
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"text sidecar {side}: unreadable JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or "text_source" not in data:
        raise InputError(f"text sidecar {side}: expected a JSON object with a 'text_source' entry")
    return TextSource.from_dict(data["text_source"], str(side))


def export_text_embeddings(out: str | os.PathLike, catalog: str | os.PathLike | Catalog | None = None,
                           encoder: str | TextEncoder = DEFAULT_ENCODER, mode: str = "catalog", seed: int = 0,
                           cache_dir: str | os.PathLike | None = None) -> TextSource:
    """Write the text matrix to ``out`` (.npy) and its provenance to the ``.json`` sidecar, both atomically."""
    out = Path(out)
    if out.suffix.lower() != ".npy":
        raise InputError(f"output {out}: must end in .npy")
    cat = catalog if isinstance(catalog, Catalog) else load_catalog(catalog)
    if mode == "none":
        raise ConfigError("text mode 'none' has no embeddings to write; choose catalog, random or shuffled")
    matrix, source = make_text_embeddings(mode, cat, encoder, seed, cache_dir)
    side = sidecar_path(out)
    payload = {"text_source": source.to_dict(), "catalog": cat.to_dict()}
    with staged_outputs(side, out) as (tmp_json, tmp_npy):  # one set: the sidecar first, the matrix last
        np.save(tmp_npy, matrix)
        tmp_json.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    log.debug("wrote %s (%d x %d, %s) and %s", out, matrix.shape[0], matrix.shape[1], source.encoder, side)
    return source
