"""The decode path: AEF int8 codes to channels-last model input, on the CPU and by the GPU's logic, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dunemap.io.aef import AEF_NODATA, dequantize
from dunemap.mapping import decode
from dunemap.mapping.decode import decode_on_device, decode_table, decode_window, window_batch, window_codes
from dunemap.mapping.predict import decoded_batches
from dunemap.mapping.profile import StageTimes
from dunemap.raster.geometry import Box
from dunemap.raster.reader import BlockData

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
BLOCK = Box(10, 20, 37, 45)
# overlapping windows, odd sizes, one touching the block's last row and column
WINDOWS = [Box(10, 20, 21, 27), Box(26, 38, 21, 27), Box(15, 21, 21, 27)]


def _random_block(seed: int = 0) -> BlockData:
    """Every code -128..127 (nodata -128 included), band-interleaved and contiguous as the reader holds a block."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(-128, 128, (64, BLOCK.height, BLOCK.width), dtype=np.int8)
    codes[:, 3, 4] = np.arange(-128, -64, dtype=np.int8)  # all codes appear for certain
    codes[:, 4, 4] = np.arange(64, 128, dtype=np.int8)
    return BlockData(BLOCK, codes, ~(codes == AEF_NODATA).any(axis=0))


def _reference(data: BlockData, win: Box, dtype: torch.dtype) -> torch.Tensor:
    """(C, h, w) values of the reference codec (elementwise: nodata -128 -> 0, whatever the pixel's other bands)."""
    r = win.relative_to(data.box)
    codes = data.data[:, r.row : r.row_stop, r.col : r.col_stop]
    values = dequantize(codes.reshape(1, -1, 1))[0].reshape(codes.shape)  # one band, a pixel per code: no masking
    return torch.from_numpy(values).to(dtype)


def _bits(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous().view(torch.int16 if x.dtype == torch.bfloat16 else torch.int32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 2, 5, 64])  # rows a step: dividing the window's height or not
def test_windows_decode_bit_for_bit_to_the_reference_codec(dtype: torch.dtype, rows: int, monkeypatch) -> None:
    monkeypatch.setattr(decode, "DECODE_ROWS", rows)
    data = _random_block()
    batch = window_batch(data, WINDOWS, dtype)
    assert batch.shape == (3, 64, 21, 27) and batch.dtype == dtype
    assert batch.is_contiguous(memory_format=torch.channels_last)
    for got, win in zip(batch, WINDOWS):
        assert torch.equal(_bits(got), _bits(_reference(data, win, dtype)))
    assert float(batch[0, 0, 3, 4]) == 0.0  # code -128 (nodata) decodes to 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("codes", [27, 27 * 5, 21 * 27 * 3, 1 << 20])  # a row, rows, bands, the whole window a step
def test_band_interleaved_windows_decode_bit_for_bit_to_the_reference_codec(dtype: torch.dtype, codes: int,
                                                                            monkeypatch) -> None:
    """What an ONNX export reads: (B, C, h, w) contiguous, the values of the channels-last decode."""
    monkeypatch.setattr(decode, "DECODE_CODES", codes)
    data = _random_block(5)
    batch = window_batch(data, WINDOWS, dtype, channels_last=False)
    assert batch.shape == (3, 64, 21, 27) and batch.dtype == dtype and batch.is_contiguous()
    for got, win in zip(batch, WINDOWS):
        assert torch.equal(_bits(got), _bits(_reference(data, win, dtype)))
    assert torch.equal(_bits(batch), _bits(window_batch(data, WINDOWS, dtype)))
    x = np.random.default_rng(6).standard_normal((64, BLOCK.height, BLOCK.width)).astype(np.float32)
    floats = window_batch(BlockData(BLOCK, x, np.ones(BLOCK.shape, dtype=bool)), WINDOWS[1:], dtype, False)
    assert floats.is_contiguous() and torch.equal(floats[0], torch.from_numpy(x[:, 16:37, 18:45]).to(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("codes", [28, 28 * 5, 1 << 20])  # a row, rows, the whole window a step
def test_even_widths_decode_two_codes_a_look_up_bit_for_bit(dtype: torch.dtype, codes: int, monkeypatch) -> None:
    """Windows of even width decode pairs of codes through a 65536-entry table of both values (``pair_table``):
    every pair of the 256 codes gives the two values of the reference codec, in order, wherever the window sits."""
    from dunemap.mapping.decode import pair_table

    monkeypatch.setattr(decode, "DECODE_CODES", codes)
    data = _random_block(7)
    windows = [Box(10, 20, 21, 28), Box(26, 37, 21, 28), Box(11, 21, 36, 44)]  # odd and even offsets
    for win in windows:
        batch = window_batch(data, [win], dtype, channels_last=False)
        assert batch.is_contiguous() and torch.equal(_bits(batch[0]), _bits(_reference(data, win, dtype)))
    table = decode_table(dtype)
    pairs = pair_table(table)
    assert pairs.shape == (65536,) and pairs.itemsize == 2 * table.itemsize and not pairs.flags.writeable
    both = np.arange(65536, dtype=np.uint16).view(np.uint8).reshape(-1, 2)  # each pair of code bits, in memory order
    np.testing.assert_array_equal(pairs.view(table.dtype).reshape(-1, 2), table[both])


def test_the_table_is_the_old_formulas_table_reordered() -> None:
    """Index = the code's bits as uint8 gives what the old index (code + 128, via XOR 0x80) gave, for both dtypes."""
    codes = np.arange(-128, 128, dtype=np.int16).astype(np.int8)
    values, _ = dequantize(codes.reshape(1, 256, 1))
    for dtype in (torch.float32, torch.bfloat16):
        want = _bits(torch.from_numpy(values.reshape(256)).to(dtype))
        table = decode_table(dtype)
        got = torch.from_numpy(table[codes.view(np.uint8)].view(np.int16 if dtype == torch.bfloat16 else np.int32))
        assert torch.equal(got, want) and not table.flags.writeable
    with pytest.raises(ValueError, match="float16"):
        decode_table(torch.float16)


def test_decode_window_accepts_any_strides() -> None:
    """A window of a pixel-interleaved copy decodes as the same window of the band-interleaved block."""
    data = _random_block(1)
    pixel = np.ascontiguousarray(data.data.transpose(1, 2, 0)).transpose(2, 0, 1)  # (C, H, W) view, C fastest
    table = decode_table(torch.float32)
    a = decode_window(data.data[:, 2:30, 5:40], table, np.empty((28, 35, 64), np.float32))
    b = decode_window(pixel[:, 2:30, 5:40], table, np.empty((28, 35, 64), np.float32))
    assert np.array_equal(a.view(np.int32), b.view(np.int32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("ahead", [False, True])
def test_the_gpu_path_gives_the_cpu_paths_values(dtype: torch.dtype, ahead: bool) -> None:
    """Codes gathered pixel-interleaved and decoded by torch.take on a device (here the CPU, the same code a
    GPU runs) give exactly the CPU decode's batches, in the same order."""
    data = _random_block(2)
    batches = [WINDOWS[:2], WINDOWS[2:]]
    codes = window_codes(data, WINDOWS)
    assert codes.dtype == torch.uint8 and codes.shape == (3, 21, 27, 64)
    assert torch.equal(_bits(decode_on_device(codes, dtype, "cpu")), _bits(window_batch(data, WINDOWS, dtype)))
    times, cpu_device = StageTimes(), torch.device("cpu")
    cpu = list(decoded_batches(data, batches, dtype, cpu_device, ahead, times))
    device = list(decoded_batches(data, batches, dtype, cpu_device, ahead, times, decode_on=cpu_device))
    assert [b for b, _ in cpu] == [b for b, _ in device] == batches
    for (_, x), (_, y) in zip(cpu, device):
        assert y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(_bits(x), _bits(y))
    assert times.seconds["decode"] > 0


def test_float_blocks_never_take_the_code_path() -> None:
    """Float embeddings are copied and cast on the CPU, whatever device would decode codes."""
    x = np.random.default_rng(3).standard_normal((64, BLOCK.height, BLOCK.width)).astype(np.float32)
    data = BlockData(BLOCK, x, np.ones(BLOCK.shape, dtype=bool))
    ((_, got),) = decoded_batches(data, [WINDOWS[:1]], torch.float32, torch.device("cpu"), False, StageTimes(),
                                  decode_on=torch.device("cpu"))
    assert torch.equal(got[0], torch.from_numpy(x[:, :21, :27]))


@CUDA
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_codes_decoded_on_cuda_equal_the_cpu_decode(dtype: torch.dtype) -> None:
    data = _random_block(4)
    times = StageTimes()
    ((_, got),) = decoded_batches(data, [WINDOWS], dtype, torch.device("cuda"), True, times,
                                  decode_on=torch.device("cuda"))
    assert got.device.type == "cuda" and got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(_bits(got.cpu()), _bits(window_batch(data, WINDOWS, dtype)))
    assert window_codes(data, WINDOWS, pin=True).is_pinned()
