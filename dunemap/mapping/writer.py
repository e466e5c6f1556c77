"""Map output: blocks written into tiled intermediate GeoTIFFs, then converted to validated COGs.

An in-progress map lives in a directory beside its target (``MAP.tif.partial/``) holding one
tiled GeoTIFF per product (classes, optional confidence, optional class probabilities) and the
resume journal. Blocks may be written in any order; :meth:`PartialMap.finalize` converts each
intermediate to a Cloud-Optimized GeoTIFF with GDAL's COG driver (deterministic settings, so the
same pixels always give the same bytes), validates it with ``rio_cogeo`` and renames it into place.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.windows import Window

from dunemap.errors import ConfigError, RasterIOError
from dunemap.io.outputs import publish, work_folder
from dunemap.io.space import full_disk_error
from dunemap.mapping.config import FRACTION_ENCODINGS, MapConfig
from dunemap.raster.cog import GDAL_CACHE_BYTES, gdal_cause, write_cog
from dunemap.raster.geometry import Box
from dunemap.raster.legend import NODATA_CLASS, ClassLegend, style_paths, write_styles
from dunemap.raster.tags import PRODUCT_TAG, product_paths
from dunemap.registry import choose

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class GridSpec:
    """The georeferenced pixel grid of a map (always north-up)."""

    height: int
    width: int
    crs: CRS | None
    transform: Affine


def partial_dir(out: str | Path) -> Path:
    """The directory holding an in-progress map's intermediates and journal."""
    out = Path(out)
    return out.with_name(f"{out.name}.partial")


DI_CAP = 254.0  # the dissimilarity band shares nodata 255 with the mask band: larger values are stored as this


def applicability_bands(dissimilarity: np.ndarray, classes: np.ndarray, threshold: float) -> np.ndarray:
    """(2, h, w) float32: the DI (capped at DI_CAP) and the mask (1 inside, 0 outside), 255 where ``classes`` is nodata."""
    nodata = (classes == NODATA_CLASS) | ~np.isfinite(dissimilarity)
    di = np.minimum(np.nan_to_num(dissimilarity, nan=0.0), DI_CAP).astype(np.float32)
    out = np.stack([di, (di <= threshold).astype(np.float32)])
    out[:, nodata] = NODATA_CLASS
    return out


def _intermediate_tile(block_size: int) -> int:
    # tiles must be multiples of 16; blocks cover whole tiles so a rewritten block replaces whole tiles
    for tile in (512, 256, 128, 64, 32, 16):
        if block_size % tile == 0:
            return tile
    raise ConfigError(f"block size {block_size} must be a multiple of 16 (GeoTIFF tile size)")


class PartialMap:
    """The tiled intermediate GeoTIFFs of one map, written block by block."""

    def __init__(
        self,
        out: str | Path,
        grid: GridSpec,
        legend: ClassLegend,
        block_size: int,
        confidence: str = "none",
        probabilities: str = "none",
        tags: dict[str, str] | None = None,
        applicability_threshold: float | None = None,
    ) -> None:
        """``applicability_threshold``: the model's DI threshold; given, the applicability companion is written."""
        self.out = Path(out)
        self.tags = dict(tags or {})  # extra dataset tags of every product, e.g. PRECISION
        self.applicability_threshold = applicability_threshold
        self.grid = grid
        self.legend = legend
        self.tile = _intermediate_tile(block_size)
        self.confidence = choose(FRACTION_ENCODINGS, confidence, "confidence encoding")
        self.probabilities = choose(FRACTION_ENCODINGS, probabilities, "probabilities encoding")
        self.directory = partial_dir(out)

    def intermediate(self, product: str) -> Path:
        return self.directory / f"{product}.tif"

    @property
    def products(self) -> list[str]:
        names = ["classes"]
        if self.confidence is not None:
            names.append("confidence")
        if self.probabilities is not None:
            names.append("probabilities")
        if self.applicability_threshold is not None:
            names.append("applicability")
        return names

    def _profile(self, product: str) -> dict:
        g = self.grid
        profile = dict(
            driver="GTiff", height=g.height, width=g.width, crs=g.crs, transform=g.transform,
            tiled=True, blockxsize=self.tile, blockysize=self.tile, compress="deflate", zlevel=1,
            sparse_ok=True, bigtiff="if_safer",
        )
        if product == "classes":
            return {**profile, "count": 1, "dtype": "uint8", "nodata": NODATA_CLASS}
        if product == "applicability":
            return {**profile, "count": 2, "dtype": "float32", "nodata": NODATA_CLASS, "interleave": "band"}
        enc = self.confidence if product == "confidence" else self.probabilities
        count = 1 if product == "confidence" else self.legend.num_classes
        return {**profile, "count": count, "dtype": enc.dtype, "nodata": enc.nodata, "interleave": "band"}

    def create(self) -> None:
        """Create empty intermediates (replacing any left from an earlier run)."""
        work_folder(self.directory)
        for product in self.products:
            try:
                with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES), rasterio.open(
                    self.intermediate(product), "w", **self._profile(product)
                ) as dst:
                    self._describe(dst, product)
            except RasterioError as exc:
                raise (full_disk_error(exc, self.out, self.intermediate(product))
                       or RasterIOError(f"{self.intermediate(product)}: cannot create ({exc})")) from None

    def _describe(self, dst, product: str) -> None:
        names = self.legend.names
        if product == "classes":
            dst.update_tags(**self.legend.tags(), **self.tags, PRODUCT="dune class map", **{PRODUCT_TAG: "classes"})
            dst.update_tags(1, CLASS_NAMES=", ".join(names))
            dst.set_band_description(1, "dune class")  # short: QGIS shows it as the legend's band line
            dst.write_colormap(1, self.legend.colormap())
            return
        if product == "applicability":
            dst.update_tags(**self.tags, PRODUCT="area of applicability (Meyer & Pebesma 2021)", **{PRODUCT_TAG: product},
                            DI_THRESHOLD=repr(self.applicability_threshold))
            dst.set_band_description(1, f"dissimilarity index (capped at {DI_CAP:g}; above "
                                        f"{self.applicability_threshold:.4f} = outside)")
            dst.set_band_description(2, "inside the area of applicability: 1 inside, 0 outside")
            return
        enc = self.confidence if product == "confidence" else self.probabilities
        dst.update_tags(**self.legend.tags(), **self.tags, PRODUCT=f"{product} (value * scale = probability)",
                        **{PRODUCT_TAG: product})
        if product == "confidence":
            dst.set_band_description(1, "confidence: maximum class probability")
            bands = [1]
        else:
            bands = list(range(1, len(names) + 1))
            for b, name in zip(bands, names):
                dst.set_band_description(b, f"probability: {name}")
        dst.scales = [enc.scale] * len(bands)
        dst.offsets = [0.0] * len(bands)

    def is_usable(self) -> bool:
        """Whether the intermediates exist and match this map's grid (so a run can resume into them)."""
        work_folder(self.directory)  # refuses a work folder that is a symbolic link
        for product in self.products:
            path = self.intermediate(product)
            if not path.is_file() or path.is_symlink():
                return False
            try:
                with rasterio.open(path) as src:
                    want = self._profile(product)
                    if (src.height, src.width, src.count, src.dtypes[0]) != (
                        self.grid.height, self.grid.width, want["count"], want["dtype"]
                    ):
                        return False
                    # georeferencing and description are written last: a damaged file may have lost them
                    if (src.crs != self.grid.crs or src.transform != self.grid.transform
                            or src.tags().get(PRODUCT_TAG) != product):
                        log.warning("%s: damaged (its georeferencing or tags are gone)", path)
                        return False
            except RasterioError as exc:
                log.warning("%s: damaged (%s)", path, " ".join(str(exc).split()))
                return False
        return True

    def damaged(self, cores: dict[int, Box]) -> list[int]:
        """The blocks (of ``cores``, index to core box) whose pixels cannot be read back from every intermediate."""
        bad: list[int] = []
        for product in self.products:
            path = self.intermediate(product)
            with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES), rasterio.open(path) as src:
                for index, core in cores.items():
                    if index in bad:
                        continue
                    try:
                        src.read(window=Window(core.col, core.row, core.width, core.height))
                    except RasterioError:
                        bad.append(index)
        if bad:
            log.warning("%s: %d written block(s) cannot be read back; predicting them again", self.directory, len(bad))
        return sorted(bad)

    def write_block(
        self,
        core: Box,
        classes: np.ndarray,
        confidence: np.ndarray | None = None,
        probabilities: np.ndarray | None = None,
        dissimilarity: np.ndarray | None = None,
    ) -> None:
        """Write one block's products into the intermediates; files are closed (flushed) on return."""
        window = Window(core.col, core.row, core.width, core.height)
        arrays: dict[str, np.ndarray] = {"classes": classes[np.newaxis]}
        if self.confidence is not None:
            if confidence is None:
                raise ConfigError("this map stores confidence but the block came without it")
            arrays["confidence"] = self.confidence.encode(confidence)[np.newaxis]
        if self.probabilities is not None:
            if probabilities is None:
                raise ConfigError("this map stores probabilities but the block came without them")
            arrays["probabilities"] = self.probabilities.encode(probabilities)
        if self.applicability_threshold is not None:
            if dissimilarity is None:
                raise ConfigError("this map stores the area of applicability but the block came without it")
            arrays["applicability"] = applicability_bands(dissimilarity, classes, self.applicability_threshold)
        for product, data in arrays.items():
            path = self.intermediate(product)
            try:
                with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES), rasterio.open(path, "r+") as dst:
                    dst.write(data, window=window)
            except RasterioError as exc:  # GDAL says "Write failed. See previous exception": the disk is asked
                raise (full_disk_error(exc, self.out, path) or RasterIOError(
                    f"{path}: cannot write block at row {core.row}, col {core.col} ({gdal_cause(exc)})")) from None

    def finalize(self, cog_tile: int = 512) -> dict[str, Path]:
        """Convert every intermediate to a validated COG and publish them as one set; remove the partial directory.

        The class map's legend companions (:func:`dunemap.raster.legend.style_paths`) are published
        with it. The COGs are made inside the partial directory, then :func:`dunemap.io.outputs.publish` moves
        them into place, companions first and the class map last (its appearance means the whole
        set is from this run), after removing companions of an earlier run that this run does not
        write. A run killed while publishing leaves its intermediates; started again, it publishes again.
        """
        finals = product_paths(self.out)
        order = [p for p in self.products if p != "classes"] + ["classes"]
        ready: list[tuple[Path, Path]] = []
        for product in order:
            resampling = "MODE" if product == "classes" else "AVERAGE"
            cog = self.directory / f"{product}.cog.tif"
            write_cog(self.intermediate(product), cog, resampling, cog_tile, name=finals[product])
            ready.append((cog, finals[product]))
        # the legend companions (GDAL categories + RAT, QGIS style) go with the class map, before it
        ready[-1:-1] = write_styles(self.legend, style_paths(finals["classes"]), self.directory)
        publish(ready, stale=[finals[p] for p in finals if p not in self.products and not p.startswith("style_")])
        for product in order:
            log.debug("wrote %s", finals[product])  # the caller's summary says it
        shutil.rmtree(self.directory)
        return {p: finals[p] for p in self.products}


def write_class_map(out: str | Path, classes: np.ndarray, grid: GridSpec, legend: ClassLegend,
                    tags: dict[str, str] | None = None, cog_tile: int = MapConfig.cog_tile) -> Path:
    """Write a whole (H, W) uint8 class array (255 = nodata) as ``dunemap map`` writes a class map.

    The same writer and the same products: a validated COG with the legend's colour table, class tags,
    overviews, GDAL categories and a QGIS style beside it, published as one set. ``tags`` add provenance
    (e.g. ``MODEL``). For maps made by other means than the network, such as a baseline classifier's.
    """
    if classes.shape != (grid.height, grid.width):
        raise ConfigError(f"{out}: class array of shape {classes.shape} does not fit the grid {grid.height} x "
                          f"{grid.width}")
    partial = PartialMap(out, grid, legend, block_size=256, tags=tags)
    partial.create()
    partial.write_block(Box(0, 0, grid.height, grid.width), classes.astype(np.uint8, copy=False))
    return partial.finalize(cog_tile)["classes"]
