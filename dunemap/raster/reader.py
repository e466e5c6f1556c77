"""Embedding raster input: the one reader of embedding rasters (float or AEF int8 GeoTIFF/VRT) by pixel boxes.

Every command that reads embeddings from a raster (``map``, ``prepare``, ``fetch-aef``) uses this
module, so they agree on which pixels hold data; label rasters are read through the same north-up
rows (:func:`read_north_up`). **The valid-pixel rule** (:func:`valid_pixels`):
a pixel is nodata when

- any band is not finite after conversion to float32 (NaN, +inf, -inf, or a float64 beyond float32),
- any band's magnitude exceeds ``MAX_EMBEDDING_VALUE`` (finite but huge, e.g. 3e38: corrupt or unscaled data),
- any band equals the raster's declared nodata value,
- for int8 (AEF quantised) rasters, any band is -128,
- the raster's own mask (an internal/per-dataset mask or alpha band) marks it invalid, or
- every band is exactly zero (AEF vectors have unit length; an all-zero vector is a fill value).

Nodata pixels become 255 in a class map and are ignored in training tiles; they are never a class.
Float rasters (Earth Engine exports, float16/32/64) are used as float32. int8 rasters are kept as
int8 in memory and de-quantised per window (``dunemap.io.aef``). Rasters stored bottom-up (positive
pixel height) are flipped on read so that callers always see a north-up grid with a negative-y
transform. A mosaic is a list of tiles of one grid, north-up or bottom-up (AEF's public COGs are
bottom-up), read tile by tile in their own dtype, without a converted copy. Tiles may be local files
or GDAL network paths (``/vsicurl/`` range reads): those are opened and read with :data:`HTTP_OPTIONS`
(GDAL retries 429/5xx answers with a doubling delay) and, when GDAL gives up, reopened and tried
again after :data:`READ_RETRY_DELAYS`; a tile still unreadable is one error naming it. A
:class:`~dunemap.raster.zones.ZoneView` crops a mosaic to the part a zone set maps and marks the
ground another zone owns as nodata, its embeddings kept as the model's context.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Interleaving, MaskFlags
from rasterio.errors import RasterioError
from rasterio.windows import Window

from dunemap.errors import InputError, RasterIOError
from dunemap.io.aef import AEF_NODATA, bits_table
from dunemap.raster.geometry import Box
from dunemap.raster.transform import north_up_transform, source_rows, tile_transform
from dunemap.raster.zones import ZoneView

log = logging.getLogger(__name__)

FLOAT_DTYPES = ("float16", "float32", "float64")
AEF_DTYPE = "int8"
# GDAL settings for network reads (a variable already set in the environment wins)
HTTP_OPTIONS = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_MAX_RETRY": "3",
    "GDAL_HTTP_RETRY_DELAY": "1",
    "VSI_CACHE": "TRUE",
}
READ_RETRY_DELAYS = (0.5, 2.0)  # seconds before reopening a network tile GDAL gave up on, then trying again

def as_source(path: str | os.PathLike) -> Path | str:
    """A raster path as the reader keeps it: GDAL virtual paths (``/vsicurl/https://...``) stay text."""
    text = os.fspath(path)
    return text if text.startswith("/vsi") else Path(text)


def is_network(path: str | os.PathLike) -> bool:
    """Whether GDAL reads ``path`` over a network (``/vsicurl/``, ``/vsis3/``, ...), not from a local file."""
    text = os.fspath(path)
    return text.startswith("/vsi") and not text.startswith(("/vsimem/", "/vsizip//", "/vsigzip//", "/vsitar//"))


def gdal_env(path: str | os.PathLike) -> contextlib.AbstractContextManager:
    """The GDAL settings to open and read ``path`` with: :data:`HTTP_OPTIONS` for network paths."""
    if not is_network(path):
        return contextlib.nullcontext()
    return rasterio.Env(**{k: v for k, v in HTTP_OPTIONS.items() if k not in os.environ})

# Embeddings are unit vectors (AEF: every band within [-1, 1]); a value beyond this is corrupt or unscaled, and its
# square would wreck a network's BatchNorm statistics. Training tiles are held to the same bound.
MAX_EMBEDDING_VALUE = 1e4
# The most pixels a raster may have (per band): the Sahara at 10 m is 9.2e10. Bigger headers (a sparse 10^6 x 10^6
# file, say) would take days to read through, so every command refuses them up front, naming the size.
MAX_RASTER_PIXELS = 10**11


def check_raster_size(path: str | os.PathLike, height: int, width: int) -> None:
    """Refuse (one InputError naming ``path`` and its size) a raster of more than ``MAX_RASTER_PIXELS`` pixels."""
    if height * width > MAX_RASTER_PIXELS:
        raise InputError(f"{path}: {width:,} x {height:,} = {height * width:.3g} pixels is more than the "
                         f"{MAX_RASTER_PIXELS:.0e} pixels a raster may have (the Sahara at 10 m is 9.2e10); cut it "
                         "into tiles or a smaller window (e.g. gdal_translate -srcwin)")


def valid_pixels(data: np.ndarray, nodata: float | None = None, mask: np.ndarray | None = None) -> np.ndarray:
    """The (H, W) valid mask of (C, H, W) embeddings ``data`` as stored (int8 AEF codes or float): the rule above.

    ``nodata`` is the raster's declared nodata value; ``mask`` its own (H, W) mask (True = valid).
    """
    if data.dtype == np.int8:
        return _valid_codes(data, nodata, mask)
    with np.errstate(over="ignore", invalid="ignore"):  # a float64 beyond float32 is inf: nodata, no warning
        valid = (np.abs(data.astype(np.float32, copy=False)) <= MAX_EMBEDDING_VALUE).all(axis=0)  # NaN: False
    if nodata is not None and np.isfinite(nodata):
        if data.dtype.kind == "f":
            valid &= ~(data == data.dtype.type(nodata)).any(axis=0)
        elif np.iinfo(data.dtype).min <= nodata <= np.iinfo(data.dtype).max and float(nodata).is_integer():
            valid &= ~(data == int(nodata)).any(axis=0)
    valid &= data.any(axis=0)
    if mask is not None:
        valid &= mask
    return valid


def _valid_codes(data: np.ndarray, nodata: float | None, mask: np.ndarray | None) -> np.ndarray:
    """:func:`valid_pixels` of int8 codes, band by band: each band's comparisons stay in the CPU's cache (one
    pass over the block instead of a (C, H, W) temporary per rule)."""
    codes = {AEF_NODATA}
    if nodata is not None and np.isfinite(nodata) and -128 <= nodata <= 127 and float(nodata).is_integer():
        codes.add(int(nodata))
    bad = np.zeros(data.shape[1:], dtype=bool)
    nonzero = np.zeros(data.shape[1:], dtype=bool)
    for band in data:
        for code in codes:
            bad |= band == code
        nonzero |= band != 0
    valid = nonzero & ~bad
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
            return bits_table()[crop.view(np.uint8)]
        return np.ascontiguousarray(crop, dtype=np.float32)

    def valid_in(self, box: Box) -> np.ndarray:
        """The (h, w) valid mask of ``box`` (inside this block)."""
        r = box.relative_to(self.box)
        return self.valid[r.row : r.row_stop, r.col : r.col_stop]


@dataclass(frozen=True)
class _Tile:
    """One source raster of a reader: where its north-up grid sits in the mosaic, and its row order."""

    path: Path | str
    row: int  # offset of the tile's northern row in the mosaic
    col: int
    height: int
    width: int
    bottom_up: bool  # rows stored south to north (positive pixel height): flipped on read
    per_dataset_mask: bool
    pixel_interleaved: bool  # a pixel's bands stored together (GDAL's INTERLEAVE=PIXEL)

    def overlap(self, box: Box) -> Box | None:
        """The part of ``box`` (mosaic pixels) this tile covers, or None."""
        return box.intersection(Box(self.row, self.col, self.height, self.width))


def open_raster(path: str | os.PathLike) -> rasterio.io.DatasetReader:
    """Open a raster for reading; a missing file, a folder, an unreadable file or one of more than
    ``MAX_RASTER_PIXELS`` pixels is one line naming it.

    A network path that GDAL cannot open is tried again after each of :data:`READ_RETRY_DELAYS`.
    """
    path = as_source(path)
    if isinstance(path, Path) and not path.exists():
        raise InputError(f"{path}: input raster not found")
    if isinstance(path, Path) and path.is_dir():
        raise InputError(f"{path}: is a folder; expected a raster")
    delays = READ_RETRY_DELAYS if is_network(path) else ()
    for attempt in range(len(delays) + 1):
        try:
            with gdal_env(path):
                src = rasterio.open(path)
            break
        except RasterioError as exc:
            if attempt == len(delays):
                raise RasterIOError(f"{path}: cannot open image as a raster ({' '.join(str(exc).split())})") from None
            log.warning("%s: cannot open it (%s); trying again in %g s", path, " ".join(str(exc).split()),
                        delays[attempt])
            time.sleep(delays[attempt])
    try:
        check_raster_size(path, src.height, src.width)
    except InputError:
        src.close()
        raise
    return src


def source_files(path: str | os.PathLike) -> list[Path]:
    """Every local file the pixels of the raster at ``path`` come from, absolute, each once, the raster first.

    GDAL's list of the dataset's files (a VRT's sources, sidecar masks and overviews) and, for each VRT among
    them, its own sources named in its XML, recursively (GDAL lists a nested VRT's tiles but not the nested
    VRT itself). Files GDAL reads through ``/vsi`` paths or that cannot be opened are listed as far as known.
    """
    found: dict[Path, None] = {}
    todo = [Path(os.path.abspath(path))]
    while todo:
        file = todo.pop(0)
        if file in found or not file.is_file():
            continue
        found[file] = None
        if len(found) > 1 and file.suffix.lower() != ".vrt":
            continue  # a source tile: its sidecars are in the list GDAL gave for the VRT that names it
        try:
            with rasterio.open(file) as src:
                names, driver = list(src.files), src.driver
        except RasterioError:
            continue
        todo += [Path(os.path.abspath(n)) for n in names if not n.startswith("/vsi")]
        if driver == "VRT":
            todo += _vrt_sources(file)
    return list(found)


def _vrt_sources(vrt: Path) -> list[Path]:
    """The files a VRT's XML names as sources (``relativeToVRT`` ones relative to its folder)."""
    import xml.etree.ElementTree as ET  # deferred: only VRT inputs need it

    try:
        root = ET.parse(vrt).getroot()
    except (OSError, ET.ParseError):
        return []
    out = []
    for element in root.iter("SourceFilename"):
        name = (element.text or "").strip()
        if not name or name.startswith("/vsi"):
            continue
        relative = element.get("relativeToVRT") == "1"
        out.append(Path(os.path.abspath(vrt.parent / name if relative else name)))
    return out


def read_north_up(src: rasterio.io.DatasetReader, box: Box, bottom_up: bool, indexes: int | list[int] | None = None,
                  masks: bool = False) -> np.ndarray:
    """The (C, h, w) stored values (or, with ``masks``, band 1's (1, h, w) mask) of ``box`` of the raster's
    north-up grid, rows north to south; a bottom-up raster's rows are read where they are stored and flipped.

    ``box`` must lie inside the raster. This is the one place rows are flipped.
    """
    window = Window(box.col, source_rows(box.row, box.height, src.height, bottom_up), box.width, box.height)
    if masks:
        data = src.read_masks(1, window=window)[None]
    elif isinstance(indexes, int):
        data = src.read(indexes, window=window)[None]
    else:
        data = src.read(indexes, window=window)
    return data[:, ::-1, :] if bottom_up else data


class EmbeddingReader:
    """Open an embedding raster (or a mosaic of tiles of one grid) and read boxes of its north-up grid.

    ``path`` is one raster (GeoTIFF, VRT) or a sequence of tiles with the same CRS, pixel size, band
    count, dtype and nodata, on one pixel grid; a tile may be stored north-up or bottom-up (AEF's
    public COGs are bottom-up). Tiles are read directly, each flipped as needed, in their own dtype
    (int8 stays int8); gaps between tiles are nodata, and later tiles are drawn over earlier ones.
    Picklable: a copy re-opens the files on first use, so the reader can be shipped to worker
    processes. Use it as a context manager or call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike | Sequence[str | os.PathLike], bands: int | None = 64,
                 view: ZoneView | None = None) -> None:
        paths = [as_source(path)] if isinstance(path, (str, os.PathLike)) else [as_source(p) for p in path]
        if not paths:
            raise InputError("a mosaic needs at least one source raster")
        self.path = paths[0]  # the raster errors name (the first tile of a mosaic)
        metas = []
        self.block_shapes: dict[Path | str, tuple[int, int]] = {}  # each source's (rows, cols) of a stored block
        for p in paths:
            with open_raster(p) as src:
                self.block_shapes[p] = src.block_shapes[0]
                metas.append((p, src.crs, north_up_transform(src.transform, src.height, where=str(p)),
                              src.transform.e > 0, src.height, src.width, src.count, tuple(src.dtypes), src.nodata,
                              MaskFlags.per_dataset in src.mask_flag_enums[0],
                              src.count > 1 and src.interleaving == Interleaving.pixel))
                if p == paths[0]:
                    self.descriptions: tuple[str | None, ...] = src.descriptions  # band names of the first raster
        _, crs, t0, _, _, _, count, dtypes, nodata, _, _ = metas[0]
        bands = count if bands is None else bands
        self.bands = bands
        for p, c, t, _, _, _, n, d, nd, _, _ in metas:
            if n != bands:
                raise InputError(f"{p}: has {n} band(s); the model expects {bands} embedding bands")
            if len(set(d)) != 1:
                raise InputError(f"{p}: bands have mixed dtypes {sorted(set(d))}; expected one of int8 (AEF) or float")
            if d[0] != AEF_DTYPE and d[0] not in FLOAT_DTYPES:
                raise InputError(f"{p}: dtype {d[0]} is not an embedding type; expected int8 (AEF quantised) or "
                                 "float16/float32/float64")
            if len(paths) == 1:
                continue
            if c != crs:
                raise InputError(f"{p}: CRS {c} differs from the first tile's {crs}")
            if not (np.isclose(t.a, t0.a) and np.isclose(t.e, t0.e)):
                raise InputError(f"{p}: pixel size ({t.a}, {t.e}) differs from the first tile's ({t0.a}, {t0.e})")
            if d != dtypes or nd != nodata:
                raise InputError(f"{p}: {n} band(s) of {d[0]} with nodata {nd}; the first tile has {count} of "
                                 f"{dtypes[0]} with nodata {nodata}")
        xres, yres = t0.a, t0.e
        west = min(m[2].c for m in metas)
        north = max(m[2].f for m in metas)
        self.tiles: list[_Tile] = []
        for p, _, t, bottom_up, h, w, *_, masked, pixel in metas:
            col, row = (t.c - west) / xres, (t.f - north) / yres
            if not (np.isclose(col, round(col), atol=1e-3) and np.isclose(row, round(row), atol=1e-3)):
                raise InputError(f"{p}: not on the first tile's pixel grid (offset {row:.3f} rows, {col:.3f} cols)")
            self.tiles.append(_Tile(p, int(round(row)), int(round(col)), h, w, bottom_up, masked, pixel))
        self.dtype: str = dtypes[0]
        self.height: int = max(t.row + t.height for t in self.tiles)
        self.width: int = max(t.col + t.width for t in self.tiles)
        check_raster_size(self.path, self.height, self.width)  # a mosaic of small tiles may span a huge grid
        self.crs: CRS | None = crs
        self.nodata: float | None = nodata
        if self.nodata is None and self.dtype == AEF_DTYPE and len(paths) > 1:
            self.nodata = AEF_NODATA  # gaps between AEF tiles read as nodata, not as zero embeddings
        # the grid callers see: north-up even when the files store their rows south to north
        self.transform: Affine = Affine(xres, 0.0, west, 0.0, yres, north)
        self.view, self._offset = view, (0, 0)
        if view is not None:
            if crs is None or crs.to_epsg() != view.epsg:
                raise InputError(f"{self.path}: CRS {crs} is not the zone's EPSG:{view.epsg}")
            crop = view.crop(self.transform, self.height, self.width)
            if crop is None:
                raise InputError(f"{self.path}: the tiles do not reach the part of zone EPSG:{view.epsg} to map")
            self._offset, self.height, self.width = (crop.row, crop.col), crop.height, crop.width
            self.transform = tile_transform(self.transform, crop.row, crop.col)
        self._src: dict[Path | str, rasterio.io.DatasetReader] = {}

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) of the north-up grid, in the raster's CRS."""
        t = self.transform
        return (t.c, t.f + self.height * t.e, t.c + self.width * t.a, t.f)

    @property
    def offset(self) -> tuple[int, int]:
        """(row, col) of the grid's first pixel in the mosaic of its tiles (not 0 where a zone view crops it)."""
        return self._offset

    @property
    def is_aef(self) -> bool:
        return self.dtype == AEF_DTYPE

    @property
    def bottom_up(self) -> bool:
        """Whether the raster (every tile of a mosaic) stores its rows south to north."""
        return all(t.bottom_up for t in self.tiles)

    def _dataset(self, path: Path | str) -> rasterio.io.DatasetReader:
        src = self._src.get(path)
        if src is None or src.closed:
            src = self._src[path] = open_raster(path)
        return src

    def _read_tile(self, tile: _Tile, part: Box) -> tuple[np.ndarray, np.ndarray | None]:
        """(C, h, w) data as stored and the (h, w) mask of ``part`` (mosaic pixels inside ``tile``), rows north to south."""
        local = part.relative_to(Box(tile.row, tile.col, tile.height, tile.width))
        delays = READ_RETRY_DELAYS if is_network(tile.path) else ()
        for attempt in range(len(delays) + 1):
            try:
                with gdal_env(tile.path):
                    src = self._dataset(tile.path)
                    data = read_north_up(src, local, tile.bottom_up)
                    mask = read_north_up(src, local, tile.bottom_up, masks=True)[0] > 0 if tile.per_dataset_mask else None
                return data, mask
            except RasterioError as exc:
                reason = " ".join(str(exc).split())
                if attempt == len(delays):
                    raise RasterIOError(f"{tile.path}: cannot read rows {part.row}-{part.row_stop}, cols {part.col}-"
                                        f"{part.col_stop} ({reason})") from None
                log.warning("%s: read failed (%s); reopening it in %g s", tile.path, reason, delays[attempt])
                self._src.pop(tile.path).close()
                time.sleep(delays[attempt])
        raise AssertionError("unreachable")

    def read(self, box: Box) -> BlockData:
        """Read ``box`` (inside the raster) as stored: int8 codes for AEF, float32 otherwise.

        With a :class:`ZoneView`, ground another zone owns is not valid; its stored values stay as context.
        """
        if box.row < 0 or box.col < 0 or box.row_stop > self.height or box.col_stop > self.width:
            raise InputError(f"{self.path}: box {box} lies outside the {self.height}x{self.width} raster")
        top = box.row + self._offset[0]
        for tile in self.tiles:  # reads go down the grid: a tile wholly above is read no more (else reopened), and
            if tile.row + tile.height <= top and tile.path in self._src:  # its open handle holds block buffers
                self._src.pop(tile.path).close()
        block = self._read_mosaic(Box(top, box.col + self._offset[1], box.height, box.width))
        if self.view is not None:
            block.valid &= self.view.owned(self.transform, box)
        return BlockData(box, block.data, block.valid)

    def _read_mosaic(self, box: Box) -> BlockData:
        parts = [(tile, part) for tile in self.tiles if (part := tile.overlap(box)) is not None]
        if len(parts) == 1 and parts[0][1] == box:
            data, mask = self._read_tile(*parts[0])
            data = np.ascontiguousarray(data)
        else:  # a mosaic: paste each tile's part, in order; gaps keep the fill, which the rule marks nodata
            fill = AEF_NODATA if self.is_aef else np.nan
            data = np.full((self.bands, box.height, box.width), fill, dtype=self.dtype)
            mask = np.ones((box.height, box.width), dtype=bool) if any(t.per_dataset_mask for t, _ in parts) else None
            for tile, part in parts:
                r = part.relative_to(box)
                piece, piece_mask = self._read_tile(tile, part)
                data[:, r.row : r.row_stop, r.col : r.col_stop] = piece
                if mask is not None:
                    mask[r.row : r.row_stop, r.col : r.col_stop] = True if piece_mask is None else piece_mask
        valid = valid_pixels(data, self.nodata, mask)
        if not self.is_aef:
            with np.errstate(over="ignore", invalid="ignore"):
                data = data.astype(np.float32, copy=False)
        if not valid.all():  # a nodata pixel is -128 (AEF) or 0 in every band; a masked copy takes a third of the
            np.copyto(data, AEF_NODATA if self.is_aef else 0.0, where=~valid)  # time boolean indexing takes
        return BlockData(box, data, valid)

    def close(self) -> None:
        for src in list(self._src.values()):
            src.close()
        self._src = {}

    def __enter__(self) -> EmbeddingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_src"] = {}
        return state
