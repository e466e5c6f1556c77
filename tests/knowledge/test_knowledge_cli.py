"""``dunemap text show`` and ``dunemap text encode`` driven through the real CLI entry point."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from dunemap.cli import main
from dunemap.knowledge.catalog import load_catalog
from dunemap.knowledge.text import read_sidecar


def test_show_lists_the_default_classes(capsys):
    assert main(["text", "show"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("catalog dunemap-default v1: 10 classes")
    rows = out[1:]
    assert len(rows) == 10
    assert rows[4].split()[:3] == ["4", "star", "#ddcc77"]


def test_show_a_user_catalog_with_descriptions(capsys, eleven_catalog):
    assert main(["text", "show", "--catalog", eleven_catalog.source, "--descriptions"]) == 0
    out = capsys.readouterr().out
    assert "11 classes" in out and "yardang" in out and "Streamlined wind-eroded ridges" in out


def test_show_a_bad_catalog_is_a_one_line_error(capsys, write_catalog, default_classes):
    default_classes[3]["id"] = 2
    path = write_catalog(default_classes)
    assert main(["text", "show", "--catalog", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("dunemap: error: catalog") and str(path) in err and "\n" not in err


def test_encode_with_the_cached_minilm_writes_matrix_and_sidecar(default_encoded, text_cache, tmp_path, capsys):
    out = tmp_path / "text.npy"
    assert main(["text", "encode", "--out", str(out), "--cache-dir", str(text_cache)]) == 0
    assert "10 x 384" in capsys.readouterr().out
    matrix, source = default_encoded
    np.testing.assert_array_equal(np.load(out), matrix)
    assert read_sidecar(out) == source
    payload = json.loads(out.with_suffix(".json").read_text())
    assert payload["catalog"]["sha256"] == load_catalog().sha256


def test_encode_a_shuffled_ablation(default_encoded, text_cache, tmp_path):
    out = tmp_path / "shuffled.npy"
    assert main(["text", "encode", "--mode", "shuffled", "--seed", "2", "--out", str(out),
                 "--cache-dir", str(text_cache)]) == 0
    m = np.load(out)
    assert sorted(map(bytes, m)) == sorted(map(bytes, default_encoded[0]))
    assert read_sidecar(out).mode == "shuffled" and read_sidecar(out).seed == 2


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--out", "x.txt"], "must end in .npy"),
        (["--encoder", "clip", "--out", "x.npy"], "unknown text encoder 'clip'"),
        (["--encoder", "npy:missing.npy", "--out", "x.npy"], "is a text matrix, not an encoder"),
    ],
)
def test_encode_errors_leave_nothing_behind(tmp_path, args, needle, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["text", "encode", *args]) == 1
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_module_entry_point_runs_text_show(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dunemap", "text", "show"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 11
