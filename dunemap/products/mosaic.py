"""One class COG in a single CRS from a zone set (or several class maps), for users who want one file.

Each output pixel takes the class of the nearest pixel of the first map that has data there (nearest
neighbour: classes are never blended). A zone set's maps own disjoint ground (:mod:`dunemap.raster.zones`),
so the order does not matter there. The mosaic is built block by block (memory bounded by
:data:`MOSAIC_BLOCK`), then converted to a COG with the map's legend, like ``dunemap map``'s maps. Areas
are best measured on the zone maps themselves (``dunemap stats DESERT``): resampling to one CRS moves
class edges by up to half a pixel.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window

from dunemap.errors import ConfigError
from dunemap.io.outputs import claim_outputs, staged_outputs
from dunemap.products.classmap import set_legend
from dunemap.products.mapset import resolve_maps
from dunemap.raster.cog import write_cog
from dunemap.raster.legend import NODATA_CLASS, style_paths
from dunemap.raster.tags import PRODUCT_TAG
from dunemap.raster.transform import tile_transform

log = logging.getLogger(__name__)

MOSAIC_BLOCK = 1024  # output pixels per block side


@dataclass
class MosaicResult:
    path: Path
    crs: str
    width: int
    height: int
    resolution: float
    maps: list[Path]


def mosaic_grid(maps: Sequence[Path], crs: CRS, resolution: float | None) -> tuple[Affine, int, int, float]:
    """The north-up grid (transform, width, height, pixel size) in ``crs`` covering every map; the pixel size
    defaults to the finest the maps' own pixels give in ``crs``."""
    boxes, sizes = [], []
    for m in maps:
        with rasterio.open(m) as src:
            box = transform_bounds(src.crs, crs, *src.bounds, densify_pts=21)
            boxes.append(box)
            sizes.append(min((box[2] - box[0]) / src.width, (box[3] - box[1]) / src.height))
    res = float(resolution or min(sizes))
    if not res > 0:
        raise ConfigError(f"resolution {resolution} must be positive")
    west, south = min(b[0] for b in boxes), min(b[1] for b in boxes)
    east, north = max(b[2] for b in boxes), max(b[3] for b in boxes)
    width, height = max(1, math.ceil((east - west) / res)), max(1, math.ceil((north - south) / res))
    return Affine(res, 0.0, west, 0.0, -res, north), width, height, res


def mosaic_maps(maps: str | os.PathLike | Sequence[str | os.PathLike], out: str | os.PathLike,
                crs: str | CRS = "EPSG:4326", resolution: float | None = None, cog_tile: int = 512,
                overwrite: bool = False) -> MosaicResult:
    """Write the class maps ``maps`` (maps, a zone set's folder or catalog) as one class COG at ``out`` in ``crs``.

    The output and its legend companions are claimed first (never over an input; an existing mosaic only
    with ``overwrite``) and published as one set.
    """
    paths, catalog = resolve_maps(maps)
    out = Path(out)
    try:
        dst_crs = CRS.from_user_input(crs)
    except CRSError as exc:
        raise ConfigError(f"CRS {crs!r} is not understood ({exc}); expected e.g. EPSG:4326") from None
    styles = style_paths(out)
    with claim_outputs([out, *styles.values()], [*paths, catalog], overwrite=overwrite):
        legend = set_legend(paths, "it cannot be placed on the mosaic")
        transform, width, height, res = mosaic_grid(paths, dst_crs, resolution)
        log.info("mosaic of %d map(s): %dx%d px of %g in %s", len(paths), width, height, res, dst_crs.to_string())
        with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as work, \
                staged_outputs(styles["aux"], styles["qml"], out) as (aux, qml, cog):
            plain = Path(work) / "mosaic.tif"
            _write_blocks(paths, plain, dst_crs, transform, width, height, legend)
            write_cog(plain, cog, "MODE", cog_tile, name=out)
            if legend is not None:
                aux.write_text(legend.pam_xml())
                qml.write_text(legend.raster_qml())
    return MosaicResult(out, dst_crs.to_string(), width, height, res, paths)


def _write_blocks(paths: Sequence[Path], plain: Path, crs: CRS, transform: Affine, width: int, height: int,
                  legend) -> None:
    profile = {"driver": "GTiff", "width": width, "height": height, "count": 1, "dtype": "uint8", "crs": crs,
               "transform": transform, "nodata": NODATA_CLASS, "tiled": True, "blockxsize": 256, "blockysize": 256,
               "compress": "deflate"}
    sources = [rasterio.open(p) for p in paths]
    try:
        with rasterio.open(plain, "w", **profile) as dst:
            if legend is not None:
                dst.update_tags(**legend.tags(), PRODUCT="dune class map (mosaic)", **{PRODUCT_TAG: "classes"})
                dst.write_colormap(1, legend.colormap())
            for r in range(0, height, MOSAIC_BLOCK):
                for c in range(0, width, MOSAIC_BLOCK):
                    h, w = min(MOSAIC_BLOCK, height - r), min(MOSAIC_BLOCK, width - c)
                    block = np.full((h, w), NODATA_CLASS, dtype=np.uint8)
                    part = np.empty_like(block)
                    for src in sources:
                        part.fill(NODATA_CLASS)
                        reproject(rasterio.band(src, 1), part, src_nodata=NODATA_CLASS, dst_nodata=NODATA_CLASS,
                                  dst_transform=tile_transform(transform, r, c), dst_crs=crs,
                                  resampling=rasterio.enums.Resampling.nearest)
                        fill = (block == NODATA_CLASS) & (part != NODATA_CLASS)
                        block[fill] = part[fill]
                    dst.write(block, 1, window=Window(c, r, w, h))
    finally:
        for src in sources:
            src.close()


def equal_area_crs(maps: Sequence[Path]) -> CRS:
    """A Lambert azimuthal equal-area CRS (WGS84, metres) centred on the maps' joint extent."""
    boxes = []
    for m in maps:
        with rasterio.open(m) as src:
            boxes.append(transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21))
    lon = (min(b[0] for b in boxes) + max(b[2] for b in boxes)) / 2
    lat = (min(b[1] for b in boxes) + max(b[3] for b in boxes)) / 2
    return CRS.from_proj4(f"+proj=laea +lat_0={lat:.6f} +lon_0={lon:.6f} +datum=WGS84 +units=m +no_defs")


def quicklook_of_set(maps: str | os.PathLike | Sequence[str | os.PathLike], out: str | os.PathLike,
                     **options) -> Path:
    """One quicklook PNG of a set of class maps (a zone set's folder or catalog, or maps) in an equal-area view
    centred on the set (:func:`equal_area_crs`): the maps are mosaicked there first (nearest neighbour), into a
    temporary file; ``options`` go to :func:`dunemap.products.quicklook.render_quicklook`."""
    from dunemap.products.quicklook import render_quicklook  # deferred: matplotlib, only for drawing

    paths, catalog = resolve_maps(maps)
    out = Path(out)
    options.setdefault("title", (catalog.parent.name if catalog else f"{len(paths)} maps") + " (equal-area view)")
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as work:
        mosaic = mosaic_maps(paths, Path(work) / "set.tif", crs=equal_area_crs(paths))
        return render_quicklook(mosaic.path, out, **options)
