"""Text ablations (catalog / random / shuffled / none), provenance records and their checkpoint checks."""

from __future__ import annotations

import numpy as np
import pytest

from dunemap.errors import CheckpointError, ConfigError
from dunemap.knowledge.catalog import Catalog, load_catalog
from dunemap.knowledge.text import (
    TEXT_MODES,
    TextSource,
    array_sha256,
    check_text_source,
    default_cache_dir,
    derangement,
    make_text_embeddings,
)


def test_text_modes_registry():
    assert set(TEXT_MODES) == {"catalog", "random", "shuffled", "none"}
    with pytest.raises(ConfigError, match="unknown text mode 'clip'; valid: catalog, none, random, shuffled"):
        make_text_embeddings("clip", load_catalog())


def test_catalog_mode_is_the_encoded_catalog(default_encoded, minilm, text_cache):
    m, src = make_text_embeddings("catalog", load_catalog(), minilm, cache_dir=text_cache)
    assert np.array_equal(m, default_encoded[0]) and src == default_encoded[1]
    assert src.embeddings_sha256 == array_sha256(m)


def test_random_mode_is_seeded_unit_noise_of_the_same_shape(default_encoded, minilm, text_cache):
    catalog = load_catalog()
    m, src = make_text_embeddings("random", catalog, minilm, seed=3, cache_dir=text_cache)
    assert m.shape == (10, 384) and m.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(m, axis=1), 1.0, atol=1e-6)
    assert np.abs(m - default_encoded[0]).max() > 0.1
    assert not np.isclose(m[:, None, :], default_encoded[0][None]).all(axis=-1).any()  # no row is a catalog row
    again, _ = make_text_embeddings("random", catalog, minilm, seed=3, cache_dir=text_cache)
    other, _ = make_text_embeddings("random", catalog, minilm, seed=4, cache_dir=text_cache)
    assert np.array_equal(m, again) and not np.allclose(m, other)
    assert (src.mode, src.seed, src.dim, src.num_classes) == ("random", 3, 384, 10)
    assert src.embeddings_sha256 == array_sha256(m) != default_encoded[1].embeddings_sha256


def test_shuffled_mode_is_a_derangement_of_catalog_rows(default_encoded, minilm, text_cache):
    reference = default_encoded[0]
    m, src = make_text_embeddings("shuffled", load_catalog(), minilm, seed=0, cache_dir=text_cache)
    # which catalog row ended up at each class
    match = np.array([[np.array_equal(m[i], reference[j]) for j in range(10)] for i in range(10)])
    assert (match.sum(axis=1) == 1).all() and (match.sum(axis=0) == 1).all()  # a permutation
    assert not match.diagonal().any()  # no class keeps its own description
    assert (src.mode, src.seed) == ("shuffled", 0)


@pytest.mark.parametrize("n", [2, 3, 10, 11])
def test_derangement_has_no_fixed_point_and_is_seeded(n):
    for seed in range(20):
        p = derangement(n, seed)
        assert sorted(p.tolist()) == list(range(n)) and not (p == np.arange(n)).any()
    assert np.array_equal(derangement(n, 5), derangement(n, 5))
    with pytest.raises(ConfigError):
        derangement(1, 0)


def test_none_mode_is_no_text(minilm, text_cache):
    m, src = make_text_embeddings("none", load_catalog(), minilm, cache_dir=text_cache)
    assert m is None
    assert (src.mode, src.encoder, src.dim, src.embeddings_sha256, src.num_classes) == ("none", "", 0, "", 10)


def test_text_source_round_trip_ignores_extra_keys(default_encoded):
    src = default_encoded[1]
    data = src.to_dict() | {"catalog": load_catalog().to_dict()}
    assert TextSource.from_dict(data) == src
    with pytest.raises(CheckpointError, match="missing catalog_sha256"):
        TextSource.from_dict({"mode": "catalog", "encoder": "x", "embeddings_sha256": "", "dim": 3})


def test_check_passes_for_the_same_catalog_and_encoder(default_encoded, minilm):
    check_text_source(default_encoded[1].to_dict(), load_catalog(), minilm)
    check_text_source(default_encoded[1].to_dict(), load_catalog(), "minilm")
    check_text_source(default_encoded[1].to_dict(), load_catalog())  # encoder not checked


def test_check_rejects_an_edited_catalog(default_encoded, default_classes):
    default_classes[4]["description"] = "A pyramid of sand."
    edited = Catalog.from_dict({"classes": default_classes}, source="edited.yaml")
    with pytest.raises(CheckpointError) as e:
        check_text_source(default_encoded[1].to_dict(), edited, "minilm")
    msg = str(e.value)
    assert "edited.yaml" in msg and default_encoded[1].catalog_sha256[:12] in msg and "\n" not in msg


def test_check_rejects_another_encoder(default_encoded, tmp_path):
    other = tmp_path / "other_model"  # identity is a content hash: no model is loaded to compute it
    other.mkdir()
    (other / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="encoded by minilm:.* but encoder st:"):
        check_text_source(default_encoded[1].to_dict(), load_catalog(), f"st:{other}")


def test_check_rejects_another_class_count(default_encoded, eleven_catalog):
    with pytest.raises(CheckpointError, match="trained with 10 classes but catalog .*eleven.yaml has 11"):
        check_text_source(default_encoded[1].to_dict(), eleven_catalog, "minilm")


def test_check_of_mode_none_needs_only_the_class_count(default_classes, eleven_catalog):
    saved = TextSource("none", "", "whatever", "", 0, 10).to_dict()
    default_classes[0]["description"] = "reworded"
    check_text_source(saved, Catalog.from_dict({"classes": default_classes}), "minilm")
    with pytest.raises(CheckpointError):
        check_text_source(saved, eleven_catalog)


def test_default_cache_dir_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DUNEMAP_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "text"
    monkeypatch.delenv("DUNEMAP_CACHE")
    assert default_cache_dir().parts[-3:] == (".cache", "dunemap", "text")
