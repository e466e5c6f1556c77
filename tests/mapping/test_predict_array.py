"""``dunemap.predict_array`` on an in-memory array equals ``dunemap map`` on the same array written as a GeoTIFF."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from mapping_helpers import smooth_unit_vectors, write_raster

import dunemap
from dunemap.cli import main
from dunemap.io.aef import quantize

REPO = Path(__file__).resolve().parents[2]
# several blocks with halos, windows overlapping across block edges, a ragged last row and column
WINDOW = ["--window", "64", "--stride", "32", "--block-size", "48"]


def _map_cli(raster: Path, weights: Path, out: Path, subprocess_: bool = True) -> np.ndarray:
    """``dunemap map`` in a fresh process (or, to spare a second torch start-up, through the same entry point here)."""
    argv = ["map", str(raster), "--weights", str(weights), "--out", str(out), *WINDOW, "--precision", "fp32",
            "--device", "cpu", "--threads", "1", "--no-progress"]
    if subprocess_:
        env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        proc = subprocess.run([sys.executable, "-m", "dunemap", *argv], capture_output=True, text=True, env=env,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr
    else:
        assert main(argv) == 0
    with rasterio.open(out) as src:
        return src.read(1)


def _holes(height: int, width: int) -> np.ndarray:
    invalid = np.zeros((height, width), bool)
    invalid[10:25, 40:70] = True
    invalid[-7:, :5] = True
    return invalid


def test_classes_equal_map_on_the_same_array_float_and_int8(tmp_path: Path, tiny_checkpoint: Path) -> None:
    height, width = 100, 90
    emb = smooth_unit_vectors(height, width, seed=3)
    invalid = _holes(height, width)
    emb[:, invalid] = np.nan
    predictor = dunemap.load_predictor(tiny_checkpoint, device="cpu", precision="fp32")

    float_map = _map_cli(write_raster(tmp_path / "emb.tif", emb), tiny_checkpoint, tmp_path / "float_map.tif")
    pred = dunemap.predict_array(predictor, emb, window=64, stride=32, block_size=48, probabilities=True)
    assert pred.classes.dtype == np.uint8 and pred.classes.shape == (height, width)
    assert np.array_equal(pred.classes, float_map)
    assert (pred.classes[invalid] == 255).all() and (pred.classes[~invalid] < 10).all()
    assert np.isnan(pred.confidence[invalid]).all()
    assert pred.probabilities.shape == (10, height, width)
    np.testing.assert_allclose(np.nansum(pred.probabilities[:, ~invalid], axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(pred.confidence[~invalid], pred.probabilities[:, ~invalid].max(axis=0))
    assert len(pred.class_names) == 10

    codes = quantize(np.nan_to_num(emb), ~invalid)  # AEF int8, -128 = nodata
    int8_map = _map_cli(write_raster(tmp_path / "aef.tif", codes, nodata=-128), tiny_checkpoint, tmp_path / "aef_map.tif",
                        subprocess_=False)
    pred8 = dunemap.predict_array(predictor, codes, window=64, stride=32, block_size=48)
    assert np.array_equal(pred8.classes, int8_map) and pred8.probabilities is None


def test_predict_array_refuses_a_wrong_array(tiny_checkpoint: Path) -> None:
    predictor = dunemap.load_predictor(tiny_checkpoint, device="cpu", precision="fp32")
    with pytest.raises(dunemap.DunemapError, match=r"expected \(C, H, W\) with C = 64"):
        dunemap.predict_array(predictor, np.zeros((16, 40, 40), np.float32))
    with pytest.raises(dunemap.DunemapError, match="int32"):
        dunemap.predict_array(predictor, np.zeros((64, 40, 40), np.int32))


def test_predictor_predict_accepts_numpy(tiny_checkpoint: Path) -> None:
    predictor = dunemap.load_predictor(tiny_checkpoint, device="cpu", precision="fp32")
    x = smooth_unit_vectors(32, 32, seed=1)
    logits = predictor.predict(x)
    assert isinstance(logits, np.ndarray) and logits.shape == (10, 32, 32)
    np.testing.assert_array_equal(logits, predictor.predict(torch.from_numpy(x[None])).numpy()[0])
    codes = quantize(x)
    assert predictor.predict(codes[None]).shape == (1, 10, 32, 32)
