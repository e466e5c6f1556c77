"""Vector geometries carried from one CRS to another: densified, then transformed vertex by vertex with pyproj.

A straight edge in one CRS is a curve in another; densifying first (``shapely.segmentize``) keeps the
transformed edge within a small fraction of the step of the true curve.
"""

from __future__ import annotations

import numpy as np
import pyproj
import shapely


def transform_geometries(geoms, transformer: pyproj.Transformer, step: float | None = None):
    """``geoms`` (a shapely geometry or an array of them) through ``transformer`` (built with ``always_xy=True``),
    each edge first cut into pieces no longer than ``step`` (in the source CRS's units; None: not densified).
    Vertices that cannot be transformed come back infinite, for the caller to refuse."""
    if step is not None:
        geoms = shapely.segmentize(geoms, step)

    def project(coords: np.ndarray) -> np.ndarray:
        x, y = transformer.transform(coords[:, 0], coords[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(geoms, project)
