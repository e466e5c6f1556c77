"""Provenance of a map as a STAC Item beside it.

The tags inside every product (model, checkpoint hash, version, precision, windows) are written by
the mapping engine from :mod:`dunemap.raster.tags`. :func:`write_stac_item` describes a finished map
and its companions (confidence, probabilities, applicability, the legend files) as one STAC Item
with the projection, raster and classification extensions.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from dunemap.io.atomic import atomic_path
from dunemap.knowledge.catalog import class_texts
from dunemap.products.classmap import map_legend
from dunemap.raster.legend import NODATA_CLASS
from dunemap.raster.tags import (
    BACKEND_PRECISION_TAG,
    BACKEND_TAG,
    CHECKPOINT_TAG,
    MODEL_TAG,
    PRECISION_TAG,
    VERSION_TAG,
    YEAR_TAG,
    product_paths,
)


def stac_path(class_map: str | os.PathLike) -> Path:
    """Where ``map --stac`` writes the STAC Item of a class map: ``MAP.json`` beside it."""
    return Path(class_map).with_suffix(".json")


_ASSETS = {  # product_paths key -> (title, roles, media type)
    "classes": ("dune class map", ["data"], "image/tiff; application=geotiff; profile=cloud-optimized"),
    "confidence": ("confidence (maximum class probability)", ["data", "quality"],
                   "image/tiff; application=geotiff; profile=cloud-optimized"),
    "probabilities": ("class probabilities", ["data"], "image/tiff; application=geotiff; profile=cloud-optimized"),
    "applicability": ("area of applicability", ["data", "quality"],
                      "image/tiff; application=geotiff; profile=cloud-optimized"),
    "style_qml": ("QGIS style", ["style", "metadata"], "application/xml"),
    "style_aux": ("GDAL category names and raster attribute table", ["metadata"], "application/xml"),
}


def write_stac_item(class_map: str | os.PathLike, out: str | os.PathLike | None = None,
                    sources: Sequence[str | os.PathLike] = ()) -> Path:
    """Write a STAC Item for a finished class map and the companions found beside it; returns its path.

    Geometry and bbox are the map's footprint in WGS 84; the projection extension gives its CRS,
    shape and transform; the raster extension each GeoTIFF's bands; the classification extension
    the classes with their names, catalog labels (titles), descriptions and colours. The provenance tags go
    into the properties. The Item's time is the year of the embedding the map was predicted from
    (``start_datetime``/``end_datetime`` of that year, from the map's ``EMBEDDING_YEAR`` tag); a map whose
    embedding year is unknown (synthetic scenes, rasters without a year) falls back to the map's
    modification time and says so in ``dunemap:datetime_source``. Each of ``sources`` (the embedding
    rasters the map was predicted from) is a ``derived_from`` link.
    """
    from datetime import datetime, timezone

    import pystac
    import rasterio
    from pystac.extensions.classification import Classification, ClassificationExtension
    from pystac.extensions.projection import ProjectionExtension
    from pystac.extensions.raster import RasterBand, RasterExtension
    from rasterio.warp import transform_bounds, transform_geom

    class_map = Path(class_map)
    out = Path(out) if out is not None else stac_path(class_map)
    with rasterio.open(class_map) as src:
        tags, crs, transform, shape, bounds = src.tags(), src.crs, src.transform, (src.height, src.width), src.bounds
        legend = map_legend(src)
    footprint = {"type": "Polygon", "coordinates": [[(bounds.left, bounds.bottom), (bounds.right, bounds.bottom),
                                                     (bounds.right, bounds.top), (bounds.left, bounds.top),
                                                     (bounds.left, bounds.bottom)]]}
    if crs is not None:
        footprint = transform_geom(crs, "EPSG:4326", footprint)
        bbox = list(transform_bounds(crs, "EPSG:4326", *bounds, densify_pts=21))
    else:
        bbox = list(bounds)
    created = datetime.fromtimestamp(class_map.stat().st_mtime, tz=timezone.utc)
    properties = {"dunemap:" + k.lower(): v for k, v in tags.items()
                  if k in (MODEL_TAG, CHECKPOINT_TAG, VERSION_TAG, PRECISION_TAG, "WINDOW", "STRIDE", "BLEND",
                           BACKEND_TAG, BACKEND_PRECISION_TAG, "BACKEND_AGREEMENT", "BACKEND_SECONDS_PER_WINDOW")}
    year = tags.get(YEAR_TAG, "")
    if year.isdigit():
        item = pystac.Item(id=class_map.stem, geometry=footprint, bbox=bbox, datetime=None, properties=properties,
                           start_datetime=datetime(int(year), 1, 1, tzinfo=timezone.utc),
                           end_datetime=datetime(int(year), 12, 31, 23, 59, 59, tzinfo=timezone.utc))
        item.properties["dunemap:datetime_source"] = f"embedding year {year}"
    else:
        item = pystac.Item(id=class_map.stem, geometry=footprint, bbox=bbox, datetime=created, properties=properties)
        item.properties["dunemap:datetime_source"] = "map file time: the embedding's year is unknown"
    item.common_metadata.created = created
    for source in sources:
        item.add_link(pystac.Link("derived_from", os.path.relpath(Path(source).absolute(), out.parent.absolute()),
                                  media_type="image/tiff; application=geotiff", title="embedding raster"))
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    if crs is not None:
        epsg = crs.to_epsg()
        proj.code = f"EPSG:{epsg}" if epsg else None
        if not epsg:
            proj.wkt2 = crs.to_wkt()
    proj.shape = list(shape)
    proj.transform = list(transform)[:6]
    RasterExtension.add_to(item)
    ClassificationExtension.add_to(item)
    for key, path in product_paths(class_map).items():
        if not path.is_file():
            continue
        title, roles, media = _ASSETS[key]
        asset = pystac.Asset(href=os.path.relpath(path, out.parent), title=title, roles=roles, media_type=media)
        item.add_asset(key, asset)
        if path.suffix.lower() in (".tif", ".tiff"):
            with rasterio.open(path) as src:
                bands = [RasterBand.create(nodata=src.nodata, data_type=dtype, scale=src.scales[i],
                                           offset=src.offsets[i]) for i, dtype in enumerate(src.dtypes)]
            RasterExtension.ext(asset).bands = bands
        if key == "classes" and legend is not None:
            texts = class_texts(list(legend.names))
            ClassificationExtension.ext(asset).classes = [
                Classification.create(value=i, name=re.sub(r"[^0-9A-Za-z_-]", "_", name), title=title,
                                      description=text or title, color_hint=color[1:].upper())
                for i, (name, title, (_, text), color) in enumerate(zip(legend.names, legend.shown, texts,
                                                                         legend.hex_colors()))
            ] + [Classification.create(value=NODATA_CLASS, name="nodata", description="no data", nodata=True)]
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(item.to_dict(include_self_link=False), indent=2) + "\n")
    return out
