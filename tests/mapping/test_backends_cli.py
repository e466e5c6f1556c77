"""``dunemap map --backend``: the backend in the map's tags, and one clear line when it cannot run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

REPO = Path(__file__).resolve().parents[2]
ARGS = ["--window", "64", "--stride", "32", "--threads", "1", "--no-progress", "--precision", "fp32"]


def _run(argv: list[str], cache: Path, prelude: str = "") -> subprocess.CompletedProcess:
    """``dunemap ARGV`` in a fresh process, its export cache under ``cache``; ``prelude`` runs first."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "DUNEMAP_CACHE": str(cache)}
    code = f"import sys\n{prelude}\nfrom dunemap.cli import main\nsys.exit(main({argv!r}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_map_with_onnxruntime_names_it_in_the_tags(tmp_path: Path, tiny_checkpoint: Path, aef_raster) -> None:
    pytest.importorskip("onnxruntime")
    raster, out = aef_raster(height=96, width=96), tmp_path / "map.tif"
    proc = _run(["map", str(raster), "--weights", str(tiny_checkpoint), "--out", str(out), "--backend",
                 "onnxruntime", *ARGS], tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    with rasterio.open(out) as src:
        tags, classes = src.tags(), src.read(1)
    assert (tags["BACKEND"], tags["BACKEND_PRECISION"], tags["PRECISION"]) == ("onnxruntime", "fp32", "fp32")
    assert (classes < 10).all()
    assert "backend engine onnxruntime, precision fp32" in proc.stdout
    assert len(list((tmp_path / "cache" / "exports").glob("*_w64_fp32.onnx"))) == 1


def test_a_backend_not_installed_is_one_line(tmp_path: Path, tiny_checkpoint: Path, aef_raster) -> None:
    raster, out = aef_raster(height=64, width=64), tmp_path / "map.tif"
    proc = _run(["map", str(raster), "--weights", str(tiny_checkpoint), "--out", str(out), "--backend",
                 "onnxruntime", *ARGS], tmp_path / "cache", prelude="sys.modules['onnxruntime'] = None")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "the package onnxruntime is not installed" in lines[0] and ".[fast]" in lines[0]
    assert not out.exists() and not (tmp_path / "cache").exists()


def test_int8_on_a_raster_without_valid_windows_is_one_line(tmp_path: Path, tiny_checkpoint: Path,
                                                            aef_raster) -> None:
    pytest.importorskip("onnxruntime")
    invalid = np.ones((96, 96), bool)
    invalid[:24, :24] = False  # data in one corner only: no window is half valid
    raster, out = aef_raster(height=96, width=96, invalid=invalid), tmp_path / "map.tif"
    proc = _run(["map", str(raster), "--weights", str(tiny_checkpoint), "--out", str(out), "--backend",
                 "onnxruntime-int8", *ARGS], tmp_path / "cache")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"dunemap: error: {raster}: too few valid pixels"), proc.stderr
    assert not out.exists() and not list(tmp_path.glob("map*"))
