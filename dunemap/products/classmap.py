"""Opening a class map for a product: one place for the checks every product needs.

A class map is a single uint8 band (255 = nodata) that says it holds classes: a colour table, GDAL
category names, or dunemap's class-name tags. Maps made by other tools qualify as soon as they carry
one of these (an Earth Engine export given a colour table, say). dunemap's own confidence and
probability rasters say what they are in a ``DUNEMAP_PRODUCT`` tag and are refused with a line
naming them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

import rasterio
from rasterio.errors import RasterioError

from dunemap.errors import InputError, RasterIOError
from dunemap.knowledge.catalog import class_texts
from dunemap.raster.legend import CLASS_NAMES_TAG, ClassLegend, read_legend
from dunemap.raster.reader import check_raster_size
from dunemap.raster.tags import PRODUCT_TAG

NOT_CLASSES = {
    "confidence": "dunemap's confidence raster (the maximum class probability of each pixel)",
    "probabilities": "dunemap's class-probability raster (one probability band per class)",
}


def _product(src: rasterio.io.DatasetReader) -> str | None:
    tags = src.tags()
    product = tags.get(PRODUCT_TAG)
    if product is None:  # maps written before the tag existed describe themselves in PRODUCT
        product = next((p for p in NOT_CLASSES if tags.get("PRODUCT", "").startswith(p)), None)
    return product


def _says_classes(src: rasterio.io.DatasetReader) -> bool:
    if src.tags().get(PRODUCT_TAG) == "classes" or CLASS_NAMES_TAG in src.tags():
        return True
    with contextlib.suppress(ValueError):  # ValueError: the band has no colour table
        src.colormap(1)
        return True
    return bool(src.tags(1).get("CLASS_NAMES")) or _category_names(src)


def _category_names(src: rasterio.io.DatasetReader) -> bool:
    """Whether GDAL category names are attached: GDAL keeps them in the ``.aux.xml`` beside a GeoTIFF
    (or in a VRT's own XML), which rasterio does not expose."""
    path = Path(src.name)
    for xml in (path.with_name(path.name + ".aux.xml"), path if path.suffix.lower() == ".vrt" else None):
        if xml is not None and xml.is_file() and "<CategoryNames>" in xml.read_text(errors="replace"):
            return True
    return False


def open_class_map(map_path: str | os.PathLike, why_crs: str) -> rasterio.io.DatasetReader:
    """Open a class map with a CRS; ``why_crs`` ends the error raised when it has none."""
    map_path = Path(map_path)
    if not map_path.exists():
        raise InputError(f"{map_path}: class map not found")
    if map_path.is_dir():
        raise InputError(f"{map_path}: is a folder; expected a class map (uint8 GeoTIFF)")
    try:
        src = rasterio.open(map_path)
    except RasterioError as exc:
        raise RasterIOError(f"{map_path}: cannot open ({' '.join(str(exc).split())})") from None
    try:
        check_raster_size(map_path, src.height, src.width)
        product = _product(src)
        if product in NOT_CLASSES:
            raise InputError(f"{map_path}: is {NOT_CLASSES[product]}, not a class map; give the class map it "
                             "came with")
        if src.count != 1 or src.dtypes[0] != "uint8":
            raise InputError(f"{map_path}: expected a uint8 class map, found {src.dtypes[0]} ({src.count} band(s); "
                             "a class map has one)")
        if not _says_classes(src):
            raise InputError(f"{map_path}: a uint8 band without a colour table, category names or class-name tags "
                             "is not known to be a class map; add a colour table (e.g. gdaldem or rasterio "
                             "write_colormap)")
        if src.crs is None:
            raise InputError(f"{map_path}: the map has no CRS; {why_crs}")
    except BaseException:
        src.close()
        raise
    return src


def labelled(legend: ClassLegend | None) -> ClassLegend | None:
    """``legend`` with labels: its own, or the catalog's for maps written without them."""
    if legend is None or legend.labels:
        return legend
    return legend.with_labels([label for label, _ in class_texts(list(legend.names))])


def map_legend(src: rasterio.io.DatasetReader) -> ClassLegend | None:
    """The legend of an open class map, labelled (:func:`labelled`)."""
    return labelled(read_legend(src))


def set_legend(maps: Sequence[Path], why_crs: str) -> ClassLegend | None:
    """The legend the class maps of a set share (None when none has one), each map opened with
    :func:`open_class_map` (``why_crs`` as there); a map whose class names differ is refused in one line."""
    legend, first = None, None
    for m in maps:
        with open_class_map(m, why_crs) as src:
            this = read_legend(src)
        if this is not None and legend is not None and this.names != legend.names:
            raise InputError(f"{m}: its classes {list(this.names)} differ from {first.name}'s; a set's maps share "
                             "one legend")
        if legend is None and this is not None:
            legend, first = this, Path(m)
    return legend
