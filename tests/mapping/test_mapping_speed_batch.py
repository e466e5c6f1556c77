"""The fast input path: windows decoded straight into channels-last bf16 give what the plain path gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from mapping_helpers import smooth_unit_vectors

from dunemap.io.aef import dequantize, quantize
from dunemap.mapping.config import MapConfig
from dunemap.mapping.predict import predict_block_data, window_batch
from dunemap.mapping.windows import blend_weights, plan_blocks
from dunemap.raster.geometry import Box
from dunemap.raster.reader import BlockData, EmbeddingReader
from dunemap.runtime import load_predictor


def _aef_block(height: int = 60, width: int = 70, seed: int = 0) -> BlockData:
    invalid = np.zeros((height, width), dtype=bool)
    invalid[5:9, 10:30] = True  # a strip of nodata
    codes = quantize(smooth_unit_vectors(height, width, seed), ~invalid)
    return BlockData(Box(100, 200, height, width), codes, ~invalid)


WINDOWS = [Box(100, 200, 32, 48), Box(120, 222, 32, 48), Box(128, 200, 32, 48)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_windows_decode_to_channels_last_values_of_the_codec(dtype: torch.dtype) -> None:
    data = _aef_block()
    batch = window_batch(data, WINDOWS, dtype)
    assert batch.shape == (3, 64, 32, 48) and batch.dtype == dtype
    assert batch.is_contiguous(memory_format=torch.channels_last)
    values, _ = dequantize(data.data)  # the reference codec, nodata -> 0
    for got, win in zip(batch, WINDOWS):
        r = win.relative_to(data.box)
        expected = torch.from_numpy(values[:, r.row : r.row_stop, r.col : r.col_stop]).to(dtype)
        assert torch.equal(got, expected)
    assert torch.count_nonzero(batch[0, :, 5:9, 10:30]) == 0


def test_float_windows_decode_to_channels_last() -> None:
    x = smooth_unit_vectors(40, 50, seed=3)
    data = BlockData(Box(0, 0, 40, 50), x, np.ones((40, 50), dtype=bool))
    windows = [Box(0, 0, 32, 32), Box(8, 18, 32, 32)]
    batch = window_batch(data, windows, torch.bfloat16)
    assert batch.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(batch[1], torch.from_numpy(x[:, 8:40, 18:50]).to(torch.bfloat16))


def test_block_prediction_equals_the_plain_float32_path(tmp_path: Path, aef_raster, tiny_checkpoint: Path) -> None:
    """Decoding to bf16 in one pass and blending in place change nothing but float rounding of the sums."""
    path = aef_raster(80, 96)
    config = MapConfig(window=32, stride=24, batch_size=2, progress=False)
    block = plan_blocks(80, 96, config.window, config.stride, 64)[0]
    predictor = load_predictor(tiny_checkpoint, precision="bf16")
    with EmbeddingReader(path) as reader:
        data = reader.read(block.extent)
    got = predict_block_data(data, predictor, block, config)

    ext = block.extent
    acc = np.zeros((10, ext.height, ext.width), dtype=np.float32)
    wsum = np.zeros(ext.shape, dtype=np.float32)
    weights = blend_weights((32, 32), config.blend)
    for win in block.windows:  # the plain path: float32 NCHW windows, autocast converts inside the model
        x = torch.from_numpy(data.embeddings(win))[None]
        p = torch.softmax(predictor.predict(x), dim=1)[0].numpy()
        r = win.relative_to(ext)
        acc[:, r.row : r.row_stop, r.col : r.col_stop] += p * weights
        wsum[r.row : r.row_stop, r.col : r.col_stop] += weights
    assert got.windows_predicted == len(block.windows)
    np.testing.assert_allclose(got.acc, acc, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(got.wsum, wsum)
