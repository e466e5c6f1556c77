"""AlphaEarth Foundations (AEF) embedding codec: int8 quantisation of the public COGs.

The public copies store each band as int8 ``q``; the float value is
``sign(q) * (|q| / 127.5) ** 2`` and ``q == -128`` marks nodata (all 64 bands at once).
"""

from __future__ import annotations

import functools

import numpy as np

AEF_BANDS = 64
AEF_NODATA = -128
AEF_SCALE = 127.5


def dequantize(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """De-quantise an int8 (bands, H, W) block: returns float32 values and a (H, W) valid mask.

    Nodata pixels (-128 in any band) are masked first and returned as 0.0.
    """
    q = np.asarray(q)
    nodata = (q == AEF_NODATA).any(axis=0)
    f = q.astype(np.float32)
    out = np.sign(f) * np.square(np.abs(f) / AEF_SCALE)
    out[:, nodata] = 0.0
    return out.astype(np.float32, copy=False), ~nodata


@functools.cache
def code_table() -> np.ndarray:
    """The float32 value of every int8 code, index ``code + 128`` (nodata -128 -> 0), for decoding by look-up.

    Computed once with :func:`dequantize`, so a look-up decodes exactly as the reference codec; read-only.
    """
    codes = np.arange(-128, 128, dtype=np.int16).astype(np.int8).reshape(1, 256, 1)
    table = dequantize(codes)[0][0, :, 0]
    table.flags.writeable = False
    return table


@functools.cache
def bits_table() -> np.ndarray:
    """:func:`code_table` indexed by the code's bits read as uint8 (index ``code & 0xFF``), read-only: what every
    look-up decoder indexes (the mapping's windows, the exports that take codes), so none needs an XOR."""
    table = code_table()[np.arange(256, dtype=np.uint8) ^ np.uint8(0x80)]
    table.flags.writeable = False
    return table


def quantize(x: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Quantise float (bands, H, W) values in [-1, 1] to AEF int8; pixels where ``valid`` is False become -128."""
    x = np.asarray(x, dtype=np.float32)
    q = np.sign(x) * np.sqrt(np.abs(x)) * AEF_SCALE
    q = np.clip(np.rint(q), -127, 127).astype(np.int8)
    if valid is not None:
        q[:, ~np.asarray(valid, dtype=bool)] = AEF_NODATA
    return q
