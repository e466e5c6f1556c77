"""Embedding raster input: the one reader of embedding rasters (float or AEF int8 GeoTIFF/VRT) by pixel boxes.

Every command that reads embeddings from a raster (``map``, ``prepare``, ``fetch-aef``) uses this
module, so they agree on which pixels hold data. **The valid-pixel rule** (:func:`valid_pixels`):
a pixel is nodata when

- any band is not finite after conversion to float32 (NaN, +inf, -inf, or a float64 beyond float32),
- any band equals the raster's declared nodata value,
- for int8 (AEF quantised) rasters, any band is -128,
- the raster's own mask (an internal/per-dataset mask or alpha band) marks it invalid, or
- every band is exactly zero (AEF vectors have unit length; an all-zero vector is a fill value).

Nodata pixels become 255 in a class map and are ignored in training tiles; they are never a class.
Float rasters (Earth Engine exports, float16/32/64) are used as float32. int8 rasters are kept as
int8 in memory and de-quantised per window (``dunemap.io.aef``). Rasters stored bottom-up (positive
pixel height) are flipped on read so that callers always see a north-up grid with a negative-y
transform.
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags
from rasterio.errors import RasterioError
from rasterio.windows import Window

from dunemap.errors import InputError, RasterIOError
from dunemap.io.aef import AEF_NODATA, dequantize
from dunemap.io.atomic import atomic_path
from dunemap.mapping.windows import Box

log = logging.getLogger(__name__)

FLOAT_DTYPES = ("float16", "float32", "float64")
AEF_DTYPE = "int8"

# float32 value of every int8 code, computed once with the reference codec (index = code + 128)
_AEF_LUT = dequantize(np.arange(-128, 128, dtype=np.int16).astype(np.int8).reshape(1, 256, 1))[0][0, :, 0]


def valid_pixels(data: np.ndarray, nodata: float | None = None, mask: np.ndarray | None = None) -> np.ndarray:
    """The (H, W) valid mask of (C, H, W) embeddings ``data`` as stored (int8 AEF codes or float): the rule above.

    ``nodata`` is the raster's declared nodata value; ``mask`` its own (H, W) mask (True = valid).
    """
    if data.dtype == np.int8:
        valid = ~(data == AEF_NODATA).any(axis=0)
    else:
        valid = np.isfinite(data.astype(np.float32, copy=False)).all(axis=0)
    if nodata is not None and np.isfinite(nodata):
        if data.dtype.kind == "f":
            valid &= ~(data == data.dtype.type(nodata)).any(axis=0)
        elif np.iinfo(data.dtype).min <= nodata <= np.iinfo(data.dtype).max and float(nodata).is_integer():
            valid &= ~(data == int(nodata)).any(axis=0)
    valid &= data.any(axis=0)
    if mask is not None:
        valid &= mask
    return valid


@dataclass
class BlockData:
    """Embeddings of one box as stored (int8 AEF codes or float32) plus its valid-pixel mask."""

    box: Box  # raster pixels held
    data: np.ndarray  # (C, h, w) int8 AEF codes or float32 values, nodata pixels zeroed / -128
    valid: np.ndarray  # (h, w) bool

    def embeddings(self, box: Box) -> np.ndarray:
        """Float32 (C, h, w) embeddings of ``box`` (inside this block); nodata pixels are 0."""
        r = box.relative_to(self.box)
        crop = self.data[:, r.row : r.row_stop, r.col : r.col_stop]
        if crop.dtype == np.int8:
            return _AEF_LUT[crop.view(np.uint8) ^ np.uint8(0x80)]
        return np.ascontiguousarray(crop, dtype=np.float32)

    def valid_in(self, box: Box) -> np.ndarray:
        """The (h, w) valid mask of ``box`` (inside this block)."""
        r = box.relative_to(self.box)
        return self.valid[r.row : r.row_stop, r.col : r.col_stop]


class EmbeddingReader:
    """Open an embedding raster and read boxes of its north-up grid.

    Picklable: a copy re-opens the file on first use, so the reader can be shipped to worker
    processes. Use it as a context manager or call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike, bands: int | None = 64) -> None:
        self.path = Path(path)
        if not self.path.exists() and not str(path).startswith("/vsi"):
            raise InputError(f"{self.path}: input raster not found")
        if self.path.is_dir():
            raise InputError(f"{self.path}: is a folder; expected an embedding raster")
        try:
            src = rasterio.open(self.path)
        except RasterioError as exc:
            raise RasterIOError(f"{self.path}: cannot open as a raster ({' '.join(str(exc).split())})") from None
        with src:
            bands = src.count if bands is None else bands
            self.bands = bands
            if src.count != bands:
                raise InputError(f"{self.path}: has {src.count} band(s); the model expects {bands} embedding bands")
            dtypes = set(src.dtypes)
            if len(dtypes) != 1:
                raise InputError(f"{self.path}: bands have mixed dtypes {sorted(dtypes)}; expected one of int8 (AEF) or float")
            dtype = dtypes.pop()
            if dtype != AEF_DTYPE and dtype not in FLOAT_DTYPES:
                raise InputError(
                    f"{self.path}: dtype {dtype} is not an embedding type; expected int8 (AEF quantised) or "
                    "float16/float32/float64"
                )
            self.dtype: str = dtype
            self.height: int = src.height
            self.width: int = src.width
            self.crs: CRS | None = src.crs
            self.nodata: float | None = src.nodata
            self.source_transform: Affine = src.transform
            self.per_dataset_mask: bool = MaskFlags.per_dataset in src.mask_flag_enums[0]
        self.bottom_up: bool = self.source_transform.e > 0
        # the grid callers see: north-up even when the file stores its rows south to north
        self.transform: Affine = (
            self.source_transform @ Affine.translation(0, self.height) @ Affine.scale(1, -1)
            if self.bottom_up
            else self.source_transform
        )
        self._src: rasterio.io.DatasetReader | None = None

    @property
    def is_aef(self) -> bool:
        return self.dtype == AEF_DTYPE

    def _dataset(self) -> rasterio.io.DatasetReader:
        if self._src is None or self._src.closed:
            self._src = rasterio.open(self.path)
        return self._src

    def read(self, box: Box) -> BlockData:
        """Read ``box`` (inside the raster) as stored: int8 codes for AEF, float32 otherwise."""
        if box.row < 0 or box.col < 0 or box.row_stop > self.height or box.col_stop > self.width:
            raise InputError(f"{self.path}: box {box} lies outside the {self.height}x{self.width} raster")
        row = self.height - box.row_stop if self.bottom_up else box.row
        window = Window(box.col, row, box.width, box.height)
        try:
            data = self._dataset().read(window=window)
            mask = self._dataset().read_masks(1, window=window) > 0 if self.per_dataset_mask else None
        except RasterioError as exc:
            raise RasterIOError(f"{self.path}: cannot read rows {box.row}-{box.row_stop}, cols {box.col}-{box.col_stop} "
                                f"({' '.join(str(exc).split())})") from None
        if self.bottom_up:
            data = np.ascontiguousarray(data[:, ::-1, :])
            mask = None if mask is None else mask[::-1, :]
        valid = valid_pixels(data, self.nodata, mask)
        if self.is_aef:
            data[:, ~valid] = AEF_NODATA  # a nodata pixel is -128 in every band
            return BlockData(box, data, valid)
        with np.errstate(over="ignore", invalid="ignore"):
            data = data.astype(np.float32, copy=False)
        data[:, ~valid] = 0.0
        return BlockData(box, data, valid)

    def close(self) -> None:
        if self._src is not None:
            self._src.close()
            self._src = None

    def __enter__(self) -> EmbeddingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_src"] = None
        return state


def build_vrt(sources: Sequence[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Write a VRT mosaic of same-CRS, same-resolution, same-band-count tiles and return its path.

    Tiles must be north-up; later tiles are drawn over earlier ones where they overlap.
    """
    out = Path(out)
    if not sources:
        raise InputError(f"{out}: a mosaic needs at least one source raster")
    metas = []
    for s in sources:
        try:
            with rasterio.open(s) as src:
                metas.append((Path(s), src.crs, src.transform, src.width, src.height, src.count, src.dtypes[0], src.nodata))
        except RasterioError as exc:
            raise RasterIOError(f"{s}: cannot open as a raster ({exc})") from None
    first = metas[0]
    _, crs, t0, _, _, count, dtype, nodata = first
    for path, c, t, _, _, n, d, _ in metas:
        if t.e >= 0 or t.b != 0 or t.d != 0:
            raise InputError(f"{path}: a mosaic tile must be north-up and unrotated; transform is {tuple(t)[:6]}")
        if c != crs:
            raise InputError(f"{path}: CRS {c} differs from the first tile's {crs}")
        if not (np.isclose(t.a, t0.a) and np.isclose(t.e, t0.e)):
            raise InputError(f"{path}: pixel size ({t.a}, {t.e}) differs from the first tile's ({t0.a}, {t0.e})")
        if n != count or d != dtype:
            raise InputError(f"{path}: {n} band(s) of {d}; the first tile has {count} of {dtype}")
    xres, yres = t0.a, t0.e
    west = min(t.c for _, _, t, *_ in metas)
    north = max(t.f for _, _, t, *_ in metas)
    east = max(t.c + w * xres for _, _, t, w, *_ in metas)
    south = min(t.f + h * yres for _, _, t, _, h, *_ in metas)
    width = int(round((east - west) / xres))
    height = int(round((south - north) / yres))
    vrt_type = {"int8": "Int8", "float32": "Float32", "float64": "Float64", "uint8": "Byte", "int16": "Int16"}.get(dtype)
    if vrt_type is None:
        raise InputError(f"{first[0]}: dtype {dtype} cannot be mosaicked; expected int8 or float")

    if nodata is None and dtype == "int8":
        nodata = AEF_NODATA  # gaps between AEF tiles must read as nodata, not as zero embeddings
    root = ET.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
    if crs is not None:
        ET.SubElement(root, "SRS").text = crs.to_wkt()
    ET.SubElement(root, "GeoTransform").text = ", ".join(repr(v) for v in (west, xres, 0.0, north, 0.0, yres))
    for band in range(1, count + 1):
        b = ET.SubElement(root, "VRTRasterBand", dataType=vrt_type, band=str(band))
        if nodata is not None:
            ET.SubElement(b, "NoDataValue").text = repr(float(nodata))
        for path, _, t, w, h, *_ in metas:
            col = int(round((t.c - west) / xres))
            row = int(round((t.f - north) / yres))
            src = ET.SubElement(b, "SimpleSource")
            ET.SubElement(src, "SourceFilename", relativeToVRT="0").text = str(path.resolve())
            ET.SubElement(src, "SourceBand").text = str(band)
            ET.SubElement(src, "SrcRect", xOff="0", yOff="0", xSize=str(w), ySize=str(h))
            ET.SubElement(src, "DstRect", xOff=str(col), yOff=str(row), xSize=str(w), ySize=str(h))
    ET.indent(root)
    with atomic_path(out) as tmp:
        tmp.write_text(ET.tostring(root, encoding="unicode") + "\n")
    log.info("wrote a %dx%d mosaic of %d tile(s) to %s", height, width, len(metas), out)
    return out
