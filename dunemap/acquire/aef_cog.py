"""Windowed reads of the public AEF COGs into one GeoTIFF mosaic over a bbox, across tiles and UTM zones.

Only the windows a bbox needs are read (GDAL range requests through ``/vsicurl/`` for URLs), never
whole 8192 x 8192 tiles, through the one embedding reader (:class:`dunemap.raster.reader.EmbeddingReader`:
int8 de-quantised as :mod:`dunemap.io.aef` says, bottom-up tiles seen north-up, its valid-pixel rule).
The output is built chunk by chunk (``chunk`` pixels square) so memory stays bounded: each chunk is filled
from the tiles it touches, tiles in the output CRS first (copied exactly when their grid is aligned),
tiles of other UTM zones reprojected with :func:`rasterio.warp.reproject`. **By default the archive's own
int8 codes are copied** (``dtype="int8"``: -128 = nodata in all bands, de-quantised by every reader as
:mod:`dunemap.io.aef` says), so a local copy costs the archive's bytes, with nearest resampling only.
``dtype="float32"`` writes de-quantised vectors instead (four times the bytes; NaN = nodata in all bands,
the GeoTIFF's nodata value NaN); with bilinear resampling (float32 only) each vector is renormalised to unit
length, as the embedding's own overviews are.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dunemap.acquire.index import (
    AefTile,
    BBox,
    bbox_center,
    check_bbox,
    check_year,
    read_index,
    select_tiles,
    utm_epsg,
)
from dunemap.errors import ConfigError, DunemapError, InputError
from dunemap.io.atomic import atomic_path
from dunemap.io.formats import embedding_creation
from dunemap.io.progress import progress_bar
from dunemap.raster.geometry import Box
from dunemap.raster.reader import HTTP_OPTIONS, EmbeddingReader
from dunemap.raster.transform import tile_transform
from dunemap.registry import choose

log = logging.getLogger(__name__)

OUTPUT_DTYPES: dict[str, float] = {  # output dtype -> its nodata value
    "int8": -128,  # the archive's int8 codes, 64 bytes per pixel (nearest resampling only); the default
    "float32": float("nan"),  # de-quantised embeddings, 256 bytes per pixel
}
RESAMPLING: dict[str, str] = {  # option name -> rasterio.enums.Resampling member
    "nearest": "nearest",  # exact source vectors; the default
    "bilinear": "bilinear",  # smoother across zone seams; vectors renormalised to unit length
}

@dataclass
class FetchConfig:
    """Options of :func:`fetch_aef`."""

    bbox: BBox  # west, south, east, north (degrees, WGS84)
    year: int
    index: str  # aef_index.parquet: local path or http(s) URL
    out: Path  # output GeoTIFF
    crs: str | None = None  # output CRS; None = the UTM zone of the bbox centre
    resolution: float = 10.0  # output pixel size in CRS units
    resampling: str = "nearest"  # for tiles not on the output grid: nearest or bilinear
    rewrites: list[tuple[str, str]] = field(default_factory=list)  # (old, new) path prefixes applied to the index
    chunk: int = 512  # output chunk side in pixels (memory: chunk^2 * bands * 4 bytes per tile read)
    dtype: str = "int8"  # int8 (the archive's codes, -128 nodata: the archive's bytes) or float32 (de-quantised, NaN)


@dataclass
class FetchResult:
    """What :func:`fetch_aef` wrote."""

    out: str
    crs: str
    width: int
    height: int
    transform: tuple[float, ...]
    tiles: list[str]
    valid_fraction: float  # share of output pixels with data


# --------------------------------------------------------------------------- pure grid geometry


def target_grid(bounds: tuple[float, float, float, float], res: float,
                anchor: tuple[float, float] | None = None) -> tuple[Any, int, int]:
    """North-up (transform, width, height) covering ``bounds`` (minx, miny, maxx, maxy), snapped to ``anchor``'s grid.

    Pixel edges fall on ``anchor + k * res`` (the origin of a source tile, so its pixels are copied
    without resampling); without an anchor they fall on multiples of ``res``.
    """
    from affine import Affine

    if not res > 0:
        raise ConfigError(f"resolution {res!r} must be positive")
    ax, ay = anchor if anchor is not None else (0.0, 0.0)
    minx, miny, maxx, maxy = bounds
    x0 = ax + math.floor((minx - ax) / res + 1e-9) * res
    x1 = ax + math.ceil((maxx - ax) / res - 1e-9) * res
    y_top = ay - math.floor((ay - maxy) / res + 1e-9) * res
    y_bot = ay - math.ceil((ay - miny) / res - 1e-9) * res
    width = max(1, int(round((x1 - x0) / res)))
    height = max(1, int(round((y_top - y_bot) / res)))
    return Affine(res, 0.0, x0, 0.0, -res, y_top), width, height


def chunk_windows(height: int, width: int, chunk: int) -> list[tuple[int, int, int, int]]:
    """Row-major ``(row_off, col_off, height, width)`` chunks tiling a ``height`` x ``width`` grid."""
    if chunk <= 0:
        raise ConfigError(f"chunk {chunk} must be a positive number of pixels")
    return [(r, c, min(chunk, height - r), min(chunk, width - c))
            for r in range(0, height, chunk) for c in range(0, width, chunk)]


def aligned_offset(src: Any, dst: Any, tol: float = 1e-6) -> tuple[int, int] | None:
    """(row, col) of ``dst``'s origin on ``src``'s north-up pixel grid when both grids coincide, else None."""
    if not (math.isclose(src.a, dst.a, rel_tol=1e-9) and math.isclose(src.e, dst.e, rel_tol=1e-9)):
        return None
    if src.b or src.d or dst.b or dst.d:
        return None
    col = (dst.c - src.c) / src.a
    row = (dst.f - src.f) / src.e
    if abs(col - round(col)) > tol or abs(row - round(row)) > tol:
        return None
    return int(round(row)), int(round(col))


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _chunk_bounds(transform: Any, row: int, col: int, h: int, w: int) -> tuple[float, float, float, float]:
    x0 = transform.c + col * transform.a
    y0 = transform.f + row * transform.e
    return x0, y0 + h * transform.e, x0 + w * transform.a, y0


# --------------------------------------------------------------------------- tile reading


class _Tile:
    """An open AEF COG (header only until a window is read), read through the one embedding reader."""

    def __init__(self, info: AefTile):
        self.info = info
        try:
            reader = self.reader = EmbeddingReader(info.gdal_path, bands=None)
        except DunemapError as exc:
            raise type(exc)(f"{info.path}: cannot open AEF tile {info.gdal_path} ({exc})") from None
        if reader.dtype != "int8":
            reader.close()
            raise InputError(f"{info.path}: AEF tile has dtype {reader.dtype}; expected int8 quantised embeddings")
        if reader.crs is None:
            reader.close()
            raise InputError(f"{info.path}: AEF tile has no CRS")
        self.crs, self.height, self.width, self.count = reader.crs, reader.height, reader.width, reader.bands
        self.nu = reader.transform
        self.descriptions = reader.descriptions

    def footprint(self, dst_crs: Any) -> tuple[float, float, float, float]:
        from rasterio.warp import transform_bounds

        b = _chunk_bounds(self.nu, 0, 0, self.height, self.width)
        return b if self.crs == dst_crs else tuple(transform_bounds(self.crs, dst_crs, *b, densify_pts=21))

    def read_north_up(self, r0: int, r1: int, c0: int, c1: int, dtype: str = "float32") -> np.ndarray:
        """De-quantised float32 (bands, r1 - r0, c1 - c0) of north-up rows/cols, NaN at nodata; with ``dtype``
        int8 the stored codes, -128 at nodata."""
        box = Box(r0, c0, r1 - r0, c1 - c0)
        block = self.reader.read(box)  # the one valid-pixel rule, the raster's mask included
        if dtype == "int8":
            return block.data  # int8 codes, -128 in every band of a nodata pixel
        values = block.embeddings(box)
        values[:, ~block.valid] = np.nan
        return values

    def read_for(self, dst_transform: Any, h: int, w: int, dst_crs: Any, resampling: str,
                 dtype: str = "float32") -> np.ndarray | None:
        """This tile's data on the ``h`` x ``w`` grid at ``dst_transform`` (nodata elsewhere), or None if it misses
        it."""
        offset = aligned_offset(self.nu, dst_transform) if self.crs == dst_crs else None
        if offset is not None:
            row, col = offset
            r0, r1 = max(row, 0), min(row + h, self.height)
            c0, c1 = max(col, 0), min(col + w, self.width)
            if r0 >= r1 or c0 >= c1:
                return None
            out = np.full((self.count, h, w), OUTPUT_DTYPES[dtype], dtype=dtype)
            out[:, r0 - row:r1 - row, c0 - col:c1 - col] = self.read_north_up(r0, r1, c0, c1, dtype)
            return out
        return self._reproject_for(dst_transform, h, w, dst_crs, resampling, dtype)

    def _reproject_for(self, dst_transform: Any, h: int, w: int, dst_crs: Any, resampling: str,
                       dtype: str) -> np.ndarray | None:
        from rasterio.enums import Resampling
        from rasterio.warp import reproject, transform_bounds

        bounds = _chunk_bounds(dst_transform, 0, 0, h, w)
        if self.crs != dst_crs:
            bounds = transform_bounds(dst_crs, self.crs, *bounds, densify_pts=21)
        cols = [(x - self.nu.c) / self.nu.a for x in (bounds[0], bounds[2])]  # axis-aligned: no inverse matrix needed
        rows = [(y - self.nu.f) / self.nu.e for y in (bounds[1], bounds[3])]
        margin = 2  # source pixels beyond the chunk for the resampling kernel
        r0, r1 = max(int(math.floor(min(rows))) - margin, 0), min(int(math.ceil(max(rows))) + margin, self.height)
        c0, c1 = max(int(math.floor(min(cols))) - margin, 0), min(int(math.ceil(max(cols))) + margin, self.width)
        if r0 >= r1 or c0 >= c1:
            return None
        src = self.read_north_up(r0, r1, c0, c1, dtype)
        nodata = OUTPUT_DTYPES[dtype]
        if missing(src).all():
            return None
        out = np.full((self.count, h, w), nodata, dtype=dtype)
        reproject(source=src, destination=out, src_transform=tile_transform(self.nu, r0, c0), src_crs=self.crs,
                  dst_transform=dst_transform, dst_crs=dst_crs, src_nodata=nodata, dst_nodata=nodata,
                  resampling=Resampling[resampling])
        if resampling != "nearest":
            norm = np.sqrt(np.nansum(np.square(out), axis=0))
            ok = np.isfinite(out).all(axis=0) & (norm > 0)
            out[:, ok] /= norm[ok]
            out[:, ~ok] = np.nan
        return out

    def close(self) -> None:
        self.reader.close()


def missing(block: np.ndarray) -> np.ndarray:
    """The (H, W) nodata mask of a float32 (NaN) or int8 (-128) output block."""
    return block[0] == -128 if block.dtype == np.int8 else np.isnan(block[0])


def _env_options() -> dict[str, str]:
    return {k: v for k, v in HTTP_OPTIONS.items() if k not in os.environ}


def fetch_aef(config: FetchConfig) -> FetchResult:
    """Read the AEF windows covering ``config.bbox`` for ``config.year`` into one GeoTIFF: the archive's int8 codes
    (-128 = nodata) or, with ``config.dtype`` float32, de-quantised vectors (NaN = nodata)."""
    import rasterio
    from rasterio.crs import CRS
    from rasterio.errors import CRSError
    from rasterio.warp import transform_bounds
    from rasterio.windows import Window

    bbox = check_bbox(config.bbox)
    year = check_year(config.year)
    resampling = choose(RESAMPLING, config.resampling, "resampling")
    dtype = config.dtype
    nodata = choose(OUTPUT_DTYPES, dtype, "output dtype")
    if dtype == "int8" and resampling != "nearest":
        raise ConfigError(f"resampling {resampling} blends vectors, which int8 codes (the default --dtype) cannot "
                          "hold; add --dtype float32, or use --resampling nearest")
    try:
        dst_crs = CRS.from_user_input(config.crs) if config.crs else CRS.from_epsg(utm_epsg(*bbox_center(bbox)))
    except CRSError as exc:
        raise ConfigError(f"CRS {config.crs!r} is not understood ({exc}); expected e.g. EPSG:32633") from None
    infos = select_tiles(read_index(config.index), bbox, year, config.rewrites)
    out = Path(config.out)

    with rasterio.Env(**_env_options()):
        tiles: list[_Tile] = []
        try:
            for info in infos:
                tiles.append(_Tile(info))
            counts = {t.count for t in tiles}
            if len(counts) != 1:
                raise InputError(f"AEF tiles differ in band count {sorted(counts)}; expected one embedding size")
            count = counts.pop()
            tiles.sort(key=lambda t: t.crs != dst_crs)  # tiles already in the output CRS first; stable otherwise
            anchor_tile = next((t for t in tiles if t.crs == dst_crs), None)
            anchor = (anchor_tile.nu.c, anchor_tile.nu.f) if anchor_tile is not None else None
            bounds = transform_bounds("EPSG:4326", dst_crs, *bbox, densify_pts=21)
            transform, width, height = target_grid(bounds, config.resolution, anchor)
            log.info("AEF %d mosaic %dx%d px x %d bands (%.2f GB %s) in %s from %d tile(s)", year, width, height,
                     count, width * height * count * np.dtype(dtype).itemsize / 1e9, dtype, dst_crs.to_string(),
                     len(tiles))
            footprints = [t.footprint(dst_crs) for t in tiles]
            chunks = chunk_windows(height, width, config.chunk)
            owners: list[list[int]] = [[] for _ in tiles]
            chunk_tiles: list[list[int]] = []
            orphan: list[int] = []
            for k, (r, c, h, w) in enumerate(chunks):
                cb = _chunk_bounds(transform, r, c, h, w)
                hits = [i for i, fp in enumerate(footprints) if _overlaps(cb, fp)]
                chunk_tiles.append(hits)
                (owners[hits[0]] if hits else orphan).append(k)

            descriptions = tiles[0].descriptions
            if not any(descriptions):
                descriptions = tuple(f"A{i:02d}" for i in range(count))
            profile = {**embedding_creation(dtype), "width": width, "height": height, "count": count,
                       "crs": dst_crs, "transform": transform, "nodata": nodata}
            valid_pixels = 0
            with atomic_path(out) as tmp:
                with rasterio.open(tmp, "w", **profile) as dst:
                    for i, desc in enumerate(descriptions, start=1):
                        if desc:
                            dst.set_band_description(i, desc)
                    dst.update_tags(aef_year=str(year), aef_index=str(config.index),
                                    bbox_wgs84=" ".join(f"{v:g}" for v in bbox),
                                    nodata=f"{'NaN' if dtype == 'float32' else nodata} in all bands",
                                    resampling=resampling)
                    for ti, tile in enumerate(tiles):
                        for k in progress_bar(owners[ti], desc=tile.info.name, unit="chunk"):
                            r, c, h, w = chunks[k]
                            block = _mosaic_chunk([tiles[j] for j in chunk_tiles[k]], transform, r, c, h, w,
                                                  count, dst_crs, resampling, dtype)
                            valid_pixels += int(np.count_nonzero(~missing(block)))
                            dst.write(block, window=Window(c, r, w, h))
                    for k in orphan:
                        r, c, h, w = chunks[k]
                        dst.write(np.full((count, h, w), nodata, dtype=dtype), window=Window(c, r, w, h))
        finally:
            for t in tiles:
                t.close()

    fraction = valid_pixels / float(width * height)
    if valid_pixels == 0:
        log.warning("%s: no AEF data inside bbox %s for %d (all nodata)", out, bbox, year)
    return FetchResult(out=str(out), crs=dst_crs.to_string(), width=width, height=height,
                       transform=tuple(transform)[:6], tiles=[t.info.path for t in tiles], valid_fraction=fraction)


def _mosaic_chunk(tiles: list[_Tile], transform: Any, r: int, c: int, h: int, w: int, count: int, dst_crs: Any,
                  resampling: str, dtype: str = "float32") -> np.ndarray:
    """One output chunk: the first tile with data wins each pixel; nodata where none has data."""
    chunk_transform = tile_transform(transform, r, c)
    block = np.full((count, h, w), OUTPUT_DTYPES[dtype], dtype=dtype)
    for tile in tiles:
        data = tile.read_for(chunk_transform, h, w, dst_crs, resampling, dtype)
        if data is None:
            continue
        fill = missing(block) & ~missing(data)
        block[:, fill] = data[:, fill]
        if not missing(block).any():
            break
    return block
