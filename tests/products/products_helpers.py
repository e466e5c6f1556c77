"""Helpers shared by the product tests: class maps written the way ``dunemap map`` writes them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.crs import CRS

from dunemap.mapping.writer import GridSpec, PartialMap
from dunemap.raster.geometry import Box
from dunemap.raster.legend import ClassLegend

LEGEND = ClassLegend.build(["interdune", "crescentic", "linear", "star"],
                           [(210, 200, 180), (230, 120, 0), (20, 90, 200), (160, 30, 120)])


def write_class_map(path: Path, classes: np.ndarray, crs: str, transform: Affine, legend: ClassLegend = LEGEND) -> Path:
    """A class-map COG with legend and colour table, written through the mapping writer."""
    h, w = classes.shape
    partial = PartialMap(path, GridSpec(h, w, CRS.from_string(crs), transform), legend, 16 * ((max(h, w) + 15) // 16))
    partial.create()
    partial.write_block(Box(0, 0, h, w), classes.astype(np.uint8))
    return partial.finalize(cog_tile=128)["classes"]
