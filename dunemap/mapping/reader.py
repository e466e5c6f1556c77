"""Embedding raster input: float or AEF int8 GeoTIFF/VRT, read by pixel boxes on a north-up grid.

Float rasters (Earth Engine exports) are used as they are, with nodata taken from the raster's
nodata value, NaN, or all-zero vectors. int8 rasters are AlphaEarth Foundations quantised
embeddings: they are kept as int8 in memory and de-quantised per window (``dunemap.io.aef``),
with -128 as nodata. Rasters stored bottom-up (positive pixel height) are flipped on read so that
callers always see a north-up grid with a negative-y transform.
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
from rasterio.errors import RasterioError
from rasterio.windows import Window

from dunemap.errors import InputError, RasterIOError
from dunemap.io.aef import AEF_NODATA, dequantize
from dunemap.io.atomic import atomic_path
from dunemap.mapping.windows import Box

log = logging.getLogger(__name__)

FLOAT_DTYPES = ("float32", "float64")
AEF_DTYPE = "int8"

# float32 value of every int8 code, computed once with the reference codec (index = code + 128)
_AEF_LUT = dequantize(np.arange(-128, 128, dtype=np.int16).astype(np.int8).reshape(1, 256, 1))[0][0, :, 0]


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

    def __init__(self, path: str | os.PathLike, bands: int = 64) -> None:
        self.path = Path(path)
        self.bands = bands
        if not self.path.exists():
            raise InputError(f"{self.path}: input raster not found")
        try:
            src = rasterio.open(self.path)
        except RasterioError as exc:
            raise RasterIOError(f"{self.path}: cannot open as a raster ({exc})") from None
        with src:
            if src.count != bands:
                raise InputError(f"{self.path}: has {src.count} band(s); the model expects {bands} embedding bands")
            dtypes = set(src.dtypes)
            if len(dtypes) != 1:
                raise InputError(f"{self.path}: bands have mixed dtypes {sorted(dtypes)}; expected one of int8 (AEF) or float")
            dtype = dtypes.pop()
            if dtype != AEF_DTYPE and dtype not in FLOAT_DTYPES:
                raise InputError(
                    f"{self.path}: dtype {dtype} is not an embedding type; expected int8 (AEF quantised) or float32/float64"
                )
            self.dtype: str = dtype
            self.height: int = src.height
            self.width: int = src.width
            self.crs: CRS | None = src.crs
            self.nodata: float | None = src.nodata
            self.source_transform: Affine = src.transform
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
        except RasterioError as exc:
            raise RasterIOError(f"{self.path}: cannot read rows {box.row}-{box.row_stop}, cols {box.col}-{box.col_stop} ({exc})") from None
        if self.bottom_up:
            data = np.ascontiguousarray(data[:, ::-1, :])
        if self.is_aef:
            valid = ~(data == AEF_NODATA).any(axis=0)
            data[:, ~valid] = AEF_NODATA  # a pixel with any band at -128 is nodata in every band
            return BlockData(box, data, valid)
        data = data.astype(np.float32, copy=False)
        invalid = np.isnan(data).any(axis=0)
        if self.nodata is not None and not np.isnan(self.nodata):
            invalid |= (data == np.float32(self.nodata)).any(axis=0)
        invalid |= ~data.any(axis=0)
        data[:, invalid] = 0.0
        return BlockData(box, data, ~invalid)

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
