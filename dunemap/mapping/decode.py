"""Window input: AEF int8 codes (or float embeddings) of a block turned into the model's channels-last batch.

The reader holds a block band-interleaved, (C, H, W) int8, as GDAL returns it; the torch model wants each
window pixel-interleaved, (B, h, w, C), in float32 or bf16 (an ONNX export wants it band-interleaved,
:func:`decode_bands`). Decoding is a look-up in a 256-entry
table (:func:`decode_table`) indexed by the code's bits read as uint8, so no arithmetic and no XOR
touch the codes. ``np.take`` on a transposed (band-interleaved) view gathers with a stride of a whole
band plane, and converts all its indices to intp first (8 bytes per code); both cost more than the
look-up itself. :func:`decode_window` therefore goes :data:`DECODE_ROWS` rows at a time: that slab's
codes are read in band order (each band's rows contiguous) and its intp indices stay in the CPU's
cache, so a window decodes at about the speed of copying its output (``benchmarks/bench_decode.py``).

On a GPU (:func:`window_codes`, :func:`decode_on_device`) only the codes travel, pixel-interleaved
int8 in pinned memory (a quarter of float32's bytes), and the look-up runs on the device with the
same table, so the values are the same as the CPU's. An ONNX export made to take codes does the same
look-up as its first operation (:func:`dunemap.runtime.export.export_onnx`): its windows are copied as
codes, band-interleaved, and never decoded here.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from functools import cache

import numpy as np
import torch

from dunemap.io.aef import bits_table
from dunemap.raster.geometry import Box
from dunemap.raster.reader import BlockData

DECODE_ROWS = 2  # window rows decoded per np.take: 2 x 512 x 64 codes, their intp indices (0.5 MiB) in L2
DECODE_CODES = 2 * 512 * 64  # codes per np.take decoding band-interleaved (:func:`decode_bands`): the same 0.5 MiB
DECODED_DTYPES = (torch.float32, torch.bfloat16)  # model input dtypes an int8 window is decoded into


@cache
def decode_table(dtype: torch.dtype) -> np.ndarray:
    """(256,) value of every AEF code at index ``code & 0xFF`` (the code's bits as uint8): float32, or for
    bf16 its bit patterns as uint16 (numpy has no bf16), rounded to nearest even as torch and autocast round.

    The values are :func:`dunemap.io.aef.bits_table`'s (the reference codec's, nodata -128 -> 0).
    """
    if dtype == torch.float32:
        return bits_table()
    if dtype != torch.bfloat16:
        raise ValueError(f"AEF codes decode to float32 or bfloat16, not {dtype}")
    lut = torch.from_numpy(bits_table().copy()).to(dtype).view(torch.int16).numpy().view(np.uint16)
    lut.flags.writeable = False
    return lut


def decode_window(codes: np.ndarray, table: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Decode int8 ``codes`` (C, h, w), any strides (a band-interleaved window of a block), into ``out``
    (h, w, C) by ``table`` (:func:`decode_table`), :data:`DECODE_ROWS` rows at a time; returns ``out``."""
    bits = codes.view(np.uint8)  # (C, h, w): the table is indexed by the code's bits
    for r0 in range(0, bits.shape[1], DECODE_ROWS):
        rows = slice(r0, r0 + DECODE_ROWS)
        np.take(table, bits[:, rows].transpose(1, 2, 0), out=out[rows])  # (rows, w, C)
    return out


def window_batch(data: BlockData, windows: Sequence[Box], dtype: torch.dtype = torch.float32,
                 channels_last: bool = True) -> torch.Tensor:
    """The model input of ``windows`` (all one shape, inside ``data.box``): (B, C, h, w) in ``dtype``,
    channels-last, or with ``channels_last`` False contiguous (band-interleaved, what an ONNX export reads).

    AEF int8 codes are decoded by table look-up straight into that layout in ``dtype`` (bf16 values
    rounded from the float32 decoding, as autocast would round them), so the predictor need not
    convert the batch again. Float embeddings are copied and cast.
    """
    h, w = windows[0].shape
    channels = data.data.shape[0]
    shape = (len(windows), h, w, channels) if channels_last else (len(windows), channels, h, w)
    if data.data.dtype == np.int8 and dtype in DECODED_DTYPES:
        table = decode_table(dtype)
        out = np.empty(shape, dtype=table.dtype)
        decode = decode_window if channels_last else decode_bands
        for i, win in enumerate(windows):
            decode(_crop(data, win), table, out[i])
        batch = torch.from_numpy(out)
        if dtype != torch.float32:
            batch = batch.view(dtype)
    else:
        out = np.empty(shape, dtype=np.float32)
        for i, win in enumerate(windows):
            out[i] = data.embeddings(win).transpose(1, 2, 0) if channels_last else data.embeddings(win)
        batch = torch.from_numpy(out).to(dtype)
    # (B, C, h, w) view of the (B, h, w, C) buffer: channels-last
    return batch.permute(0, 3, 1, 2) if channels_last else batch


def _crop(data: BlockData, win: Box) -> np.ndarray:
    r = win.relative_to(data.box)
    return data.data[:, r.row : r.row_stop, r.col : r.col_stop]  # (C, h, w) view


def decode_bands(codes: np.ndarray, table: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Decode int8 ``codes`` (C, h, w), any strides, into ``out`` (C, h, w) band-interleaved by ``table``, whole
    bands (or rows of one) of about :data:`DECODE_CODES` codes at a time; returns ``out``.

    An even width is decoded two codes a look-up (:func:`pair_table`): each pair of neighbouring codes, read as one
    uint16, indexes both values at once, which halves the indices ``np.take`` converts (2.2x faster for 128 px
    windows of a 1152 px block, BENCHMARKS.md, issue 30)."""
    bits = codes.view(np.uint8)
    c, h, w = bits.shape
    bands, rows = max(1, DECODE_CODES // (h * w)), max(1, DECODE_CODES // w)
    # pairs of codes read as one little-endian uint16 (pair_table): on a big-endian machine, one code a look-up
    pairs = pair_table(table) if w % 2 == 0 and out.flags.c_contiguous and sys.byteorder == "little" else None
    for b0 in range(0, c, bands):
        for r0 in range(0, h, rows):
            part = (slice(b0, b0 + bands), slice(r0, r0 + rows))
            if pairs is None:
                np.take(table, bits[part], out=out[part])
            else:  # the codes made contiguous, read as pairs; the output's pairs as one wider word
                np.take(pairs, np.ascontiguousarray(bits[part]).view(np.uint16), out=out[part].view(pairs.dtype))
    return out


@cache
def _pair_table(table_bytes: bytes, dtype: str) -> np.ndarray:
    bits = np.frombuffer(table_bytes, dtype=dtype)
    bits = bits.view(f"u{bits.itemsize}")  # the values' bits, to be put side by side in one wider word
    wide = np.dtype(f"u{2 * bits.itemsize}")
    index = np.arange(65536)
    low, high = bits[index & 0xFF].astype(wide), bits[index >> 8].astype(wide)
    pairs = low | (high << np.array(8 * bits.itemsize, dtype=wide))
    pairs.flags.writeable = False
    return pairs


def pair_table(table: np.ndarray) -> np.ndarray:
    """(65536,) look-up of two codes at once: at index ``first | second << 8`` (two code bits read as a
    little-endian uint16) the values of both, first in the low half, as one unsigned word twice ``table``'s width."""
    return _pair_table(table.tobytes(), table.dtype.str)


def window_codes(data: BlockData, windows: Sequence[Box], pin: bool = False,
                 channels_last: bool = True) -> torch.Tensor:
    """The int8 codes of ``windows`` as uint8 (the codes' bits), not decoded: pixel-interleaved (B, h, w, C), in
    pinned memory with ``pin``, what :func:`decode_on_device` decodes on a GPU; or with ``channels_last`` False
    band-interleaved (B, C, h, w), what an export that decodes codes itself reads
    (:func:`dunemap.runtime.export.export_onnx`). ``data`` must hold int8 codes."""
    h, w = windows[0].shape
    channels = data.data.shape[0]
    shape = (len(windows), h, w, channels) if channels_last else (len(windows), channels, h, w)
    out = torch.empty(shape, dtype=torch.uint8, pin_memory=pin)
    buf = out.numpy()
    for i, win in enumerate(windows):
        codes = _crop(data, win).view(np.uint8)
        if not channels_last:
            np.copyto(buf[i], codes)
            continue
        for r0 in range(0, h, DECODE_ROWS):  # band order within a few rows: reads stay near each other
            rows = slice(r0, r0 + DECODE_ROWS)
            np.copyto(buf[i, rows], codes[:, rows].transpose(1, 2, 0))
    return out


def decode_on_device(codes: torch.Tensor, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """Decode (B, h, w, C) uint8 code bits (:func:`window_codes`) on ``device`` by ``torch.take`` of
    :func:`decode_table` there: (B, C, h, w) channels-last ``dtype``, the values :func:`window_batch` gives."""
    device = torch.device(device)
    table = _device_table(dtype, device)
    codes = codes.to(device, non_blocking=True)
    out = torch.empty(codes.shape, dtype=table.dtype, device=device)  # (B, h, w, C)
    for i in range(codes.shape[0]):  # one window's int64 indices at a time
        torch.take(table, codes[i].long(), out=out[i])
    return out.view(dtype).permute(0, 3, 1, 2)  # (B, C, h, w) view: channels-last


@cache
def _device_table(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """:func:`decode_table` on ``device`` (int16 bit patterns for bf16; a copy: the table is read-only)."""
    table = decode_table(dtype)
    bits = table.view(np.int16) if dtype == torch.bfloat16 else table
    return torch.from_numpy(bits.copy()).to(device)
