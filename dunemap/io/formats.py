"""Output formats: the file extension chooses the driver, in this one place for every command.

Vectors are written with pyogrio (GeoPackage, Shapefile, GeoJSON, FlatGeobuf) or, for GeoParquet,
with pyarrow (the GDAL that pyogrio's wheels bundle has no Parquet driver); rasters
are GeoTIFFs (Cloud-Optimized where the command makes COGs). Any other extension is refused with a
line listing the supported ones. A Shapefile is several files; :func:`file_set` names them all so
the output policy can check, lock and publish them as one set.
"""

from __future__ import annotations

import os
from pathlib import Path

from dunemap.errors import ConfigError
from dunemap.io.outputs import OutputWriteError, publish
from dunemap.io.space import full_disk_error

VECTOR_DRIVERS = {  # extension -> OGR driver
    ".gpkg": "GPKG",
    ".shp": "ESRI Shapefile",
    ".geojson": "GeoJSON",
    ".fgb": "FlatGeobuf",
    ".parquet": "Parquet",
}
RASTER_DRIVERS = {".tif": "GTiff", ".tiff": "GTiff"}  # extension -> GDAL driver (COG when the command makes one)
SHAPEFILE_SIDECARS = (".shx", ".dbf", ".prj", ".cpg")  # written beside a .shp, published with it
# Writer options per driver. GeoPackage 1.2: GDAL >= 3.7 writes 1.4 by default, which GDAL 3.6 (QGIS 3.22)
# warns about; 1.2 is read silently everywhere. GeoJSON: RFC 7946, WGS 84 lon/lat without the legacy
# "crs" member (GDAL reprojects the geometries).
_DATASET_OPTIONS = {"GPKG": {"VERSION": "1.2"}}
_LAYER_OPTIONS = {"GeoJSON": {"RFC7946": "YES"}, "ESRI Shapefile": {"ENCODING": "UTF-8"}}
GPKG_DATETIME = "%Y-%m-%dT%H:%M:%S.{ms:03d}Z"  # the GeoPackage DATETIME form (YYYY-MM-DDTHH:MM:SS.SSSZ)
EMBEDDING_TILE = 256  # px, the stored blocks of an embedding raster dunemap writes


class UnsupportedFormatError(ConfigError):
    """An output's file extension names no format the command can write."""


def _driver(path: str | os.PathLike, drivers: dict[str, str], what: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in drivers:
        supported = ", ".join(f"{ext} ({drv})" for ext, drv in drivers.items())
        raise UnsupportedFormatError(f"{path}: cannot write {what} as {suffix or 'a file without extension'!r}; "
                                     f"supported: {supported}")
    return drivers[suffix]


def vector_driver(path: str | os.PathLike) -> str:
    """The OGR driver of a vector output, from its extension (UnsupportedFormatError otherwise)."""
    return _driver(path, VECTOR_DRIVERS, "vectors")


def raster_driver(path: str | os.PathLike) -> str:
    """The GDAL driver of a raster output, from its extension (UnsupportedFormatError otherwise)."""
    return _driver(path, RASTER_DRIVERS, "a raster")


def embedding_creation(dtype: str) -> dict[str, object]:
    """GeoTIFF creation options of every embedding raster dunemap writes (synthetic scenes, AEF mosaics): tiled,
    pixel-interleaved (a pixel's 64 values in one stored block, as a map reads them), ZSTD level 1 after the
    predictor of ``dtype`` (horizontal differencing for integers, the floating-point one for floats).

    On AEF int8 codes ZSTD level 1 stores a 4096 x 4096 raster in 9 % less space than DEFLATE and decodes a tile
    about ten times faster (2.7 against 27 ms), so a map spends less of its time reading (BENCHMARKS.md, issue 30).
    GDAL has read ZSTD GeoTIFFs since 2.3; an older reader needs a copy in DEFLATE
    (``gdal_translate -co COMPRESS=DEFLATE``).
    """
    floating = dtype.startswith("float")
    return {"driver": "GTiff", "dtype": dtype, "tiled": True, "blockxsize": EMBEDDING_TILE,
            "blockysize": EMBEDDING_TILE, "compress": "zstd", "zstd_level": 1, "predictor": 3 if floating else 2,
            "interleave": "pixel", "BIGTIFF": "IF_SAFER"}


def file_set(path: str | os.PathLike) -> list[Path]:
    """Every file an output at ``path`` consists of: the sidecars of a Shapefile, then the path itself (last)."""
    path = Path(path)
    if path.suffix.lower() == ".shp":
        return [path.with_suffix(ext) for ext in SHAPEFILE_SIDECARS] + [path]
    return [path]


def supports_layers(path: str | os.PathLike) -> bool:
    """Whether the format holds several layers, so an existing file keeps its other layers (GeoPackage)."""
    return vector_driver(path) == "GPKG"


def write_vectors(
    out: str | os.PathLike,
    geometry,
    field_data: list,
    fields: list[str],
    *,
    layer: str,
    geometry_type: str,
    crs: str,
    keep_layers: bool = False,
    style_qml: str | None = None,
) -> Path:
    """Write one vector layer to ``out`` in the format its extension names, published as a whole set.

    GeoJSON is written as RFC 7946 (geometries reprojected from ``crs`` to WGS 84 lon/lat); GeoPackages as
    version 1.2, which every GDAL and QGIS in use reads without a warning.

    Every file of the set (:func:`file_set`) is written under a temporary name beside ``out`` and
    moved into place by :func:`dunemap.io.outputs.publish`, sidecars first and ``out`` last, after
    removing sidecars of an earlier file that this one does not have. ``keep_layers`` (GeoPackage
    only) writes the layer into a copy of the existing file, so its other layers survive.
    ``style_qml`` (GeoPackage only) is stored in the ``layer_styles`` table as the layer's default
    QGIS style.
    """
    import shutil
    import tempfile

    import pyogrio.raw

    out = Path(out)
    driver = vector_driver(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=f".tmp{out.suffix}", dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    temps = [Path(str(tmp)[: -len(out.suffix)] + ext) for ext in SHAPEFILE_SIDECARS] if driver == "ESRI Shapefile" else []
    try:
        if keep_layers and driver == "GPKG":
            shutil.copyfile(out, tmp)
        else:
            tmp.unlink()  # the driver creates the file itself
        if driver == "Parquet":
            _write_geoparquet(tmp, geometry, field_data, fields, geometry_type, crs)
        else:
            pyogrio.raw.write(tmp, geometry, field_data, fields, layer=layer, driver=driver,
                              geometry_type=geometry_type, crs=crs, dataset_options=_DATASET_OPTIONS.get(driver),
                              layer_options=_LAYER_OPTIONS.get(driver))
        if style_qml is not None and driver == "GPKG":
            store_layer_style(tmp, layer, style_qml)
        sidecars = [(t, f) for t, f in zip(temps, file_set(out)[:-1]) if t.exists()]
        stale = [f for t, f in zip(temps, file_set(out)[:-1]) if not t.exists()]
        publish([*sidecars, (tmp, out)], stale=stale)
    except Exception as exc:
        full = full_disk_error(exc, out, tmp)  # asked while the failed files still take their space
        if full is not None and full is not exc:  # a GeoPackage then says "no such table", a shapefile "FWrite()"
            raise full from None
        if isinstance(exc, OutputWriteError) or not isinstance(exc, OSError):
            raise
        raise OutputWriteError(f"{out}: cannot write ({exc.strerror or exc})") from None
    finally:
        for path in (tmp, *temps):
            path.unlink(missing_ok=True)
    return out


def feature_layer(path: str | os.PathLike) -> str | None:
    """The layer of a vector file to read features from: the first one that is not QGIS's ``layer_styles``
    table (which a GeoPackage with stored styles lists as a layer too); None for single-layer formats."""
    import pyogrio

    layers = [str(name) for name, _ in pyogrio.list_layers(path)]
    if len(layers) < 2:
        return None
    return next((name for name in layers if name != "layer_styles"), layers[0])


def store_layer_style(gpkg: str | os.PathLike, layer: str, qml: str, name: str = "dunemap",
                      description: str = "dune classes") -> None:
    """Make ``qml`` the default QGIS style of ``layer`` in the GeoPackage's ``layer_styles`` table (the table
    as QGIS creates it; ``update_time`` in the GeoPackage DATETIME form GDAL reads without a warning)."""
    import sqlite3
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc)
    with sqlite3.connect(gpkg) as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS layer_styles (id INTEGER PRIMARY KEY AUTOINCREMENT, f_table_catalog TEXT, "
            "f_table_schema TEXT, f_table_name TEXT, f_geometry_column TEXT, styleName TEXT, styleQML TEXT, "
            "styleSLD TEXT, useAsDefault BOOLEAN, description TEXT, owner TEXT, ui TEXT, update_time DATETIME)")
        db.execute("INSERT OR IGNORE INTO gpkg_contents (table_name, data_type, identifier) "
                   "VALUES ('layer_styles', 'attributes', 'layer_styles')")
        geometry_column = db.execute("SELECT column_name FROM gpkg_geometry_columns WHERE table_name = ?",
                                     (layer,)).fetchone()
        db.execute("DELETE FROM layer_styles WHERE f_table_name = ?", (layer,))
        db.execute(
            "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, f_geometry_column, styleName, "
            "styleQML, styleSLD, useAsDefault, description, owner, ui, update_time) "
            "VALUES ('', '', ?, ?, ?, ?, '', 1, ?, '', NULL, ?)",
            (layer, geometry_column[0] if geometry_column else "geom", name, qml, description,
             now.strftime(GPKG_DATETIME.format(ms=now.microsecond // 1000))))


def _write_geoparquet(path: Path, geometry, field_data: list, fields: list[str], geometry_type: str, crs: str) -> None:
    """A GeoParquet 1.1 file: the fields, a WKB ``geometry`` column and the ``geo`` metadata (CRS as PROJJSON, bbox)."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq
    import pyproj
    import shapely

    geoms = shapely.from_wkb(geometry)
    bounds = shapely.total_bounds(geoms) if len(geoms) else None
    column = {"encoding": "WKB", "geometry_types": [geometry_type], "crs": pyproj.CRS.from_user_input(crs).to_json_dict()}
    if bounds is not None:
        column["bbox"] = [float(v) for v in bounds]
    table = pa.table({**{name: pa.array(list(values)) for name, values in zip(fields, field_data)},
                      "geometry": pa.array(list(geometry), type=pa.binary())})
    geo = {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": column}}
    pq.write_table(table.replace_schema_metadata({b"geo": json.dumps(geo).encode()}), path)
