"""Labelling patches: the squares a user labels on new ground (``dunemap suggest`` proposes them).

A patches file is a polygon layer in any vector format and CRS. Each polygon becomes the pixel box
that holds it on the image's north-up grid. :func:`read_patches` refuses, in one line naming the patch,
a patch that reaches over the raster's edge, one that lies mostly on nodata, and patches that overlap
(a pixel labelled twice would count twice in training).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dunemap.data.labels import VectorLabels, one_line, vector_layer
from dunemap.errors import InputError
from dunemap.raster.geometry import Box
from dunemap.raster.reader import EmbeddingReader

MIN_PATCH_VALID = 0.5  # a patch needs at least this share of valid (data) pixels
PATCH_ID_FIELD = "rank"  # a patch's number when its layer has this field (``dunemap suggest`` writes it)


@dataclass(frozen=True)
class Patch:
    """One labelling patch: its number (the ``rank`` field, else its position from 1) and its pixel box."""

    number: int
    box: Box


def _pixel_box(bounds: np.ndarray, image: EmbeddingReader) -> Box:
    """The pixel box of the image's north-up grid that holds ``bounds`` (minx, miny, maxx, maxy), edges rounded
    to the nearest pixel edge (a patch drawn on the grid maps onto it exactly)."""
    t = image.transform
    c0, c1 = (bounds[0] - t.c) / t.a, (bounds[2] - t.c) / t.a
    r0, r1 = (bounds[3] - t.f) / t.e, (bounds[1] - t.f) / t.e
    r0, r1, c0, c1 = (int(math.floor(v + 0.5)) for v in (r0, r1, c0, c1))
    return Box(r0, c0, max(r1 - r0, 0), max(c1 - c0, 0))


def read_patches(path: str | os.PathLike, image: EmbeddingReader, layer: str | None = None) -> list[Patch]:
    """The patches of ``path`` as pixel boxes of ``image`` (moved into its CRS first), checked as described above."""
    import pyogrio
    import shapely
    from rasterio.crs import CRS

    path = Path(path)
    layer, info = vector_layer(path, layer, "patches file", "the patches", "the patches")
    try:
        _meta, _fids, wkb, field_data = pyogrio.raw.read(path, layer=layer, return_fids=True)
    except Exception as exc:  # pyogrio raises its own DataSourceError/DataLayerError types
        raise InputError(f"{path}: cannot read the patches ({one_line(exc)})") from None
    fields = [str(f) for f in info.get("fields", [])]
    geoms = shapely.from_wkb(wkb) if len(wkb) else np.array([], dtype=object)
    if not len(geoms):
        raise InputError(f"{path}: holds no patch")
    numbers = (np.asarray(field_data[fields.index(PATCH_ID_FIELD)]).astype(int) if PATCH_ID_FIELD in fields
               else np.arange(1, len(geoms) + 1))
    moved = VectorLabels(geoms, np.zeros(len(geoms), int), CRS.from_user_input(info["crs"]), str(path)).to_crs(
        image.crs).geometries
    patches = []
    for number, bounds in zip(numbers, shapely.bounds(moved)):
        box = _pixel_box(bounds, image)
        if box.height < 1 or box.width < 1:
            raise InputError(f"{path}: patch {number} covers no pixel of {image.path}")
        if box.row < 0 or box.col < 0 or box.row_stop > image.height or box.col_stop > image.width:
            raise InputError(f"{path}: patch {number} reaches over the edge of {image.path} (rows {box.row}-"
                             f"{box.row_stop}, cols {box.col}-{box.col_stop} of {image.height}x{image.width})")
        valid = float(image.read(box).valid.mean())
        if valid < MIN_PATCH_VALID:
            raise InputError(f"{path}: patch {number} lies on nodata of {image.path} ({valid:.0%} of its pixels "
                             f"hold data; at least {MIN_PATCH_VALID:.0%} needed)")
        for other in patches:
            if box.intersection(other.box) is not None:
                raise InputError(f"{path}: patches {other.number} and {number} overlap; a pixel may be labelled "
                                 "once")
        patches.append(Patch(int(number), box))
    return patches
