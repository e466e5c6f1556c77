"""Tags and file names every map product carries: which product a file is, and what made it.

A map is a set of files named after its class map (:func:`product_paths`). Each carries the
``DUNEMAP_PRODUCT`` tag saying which product it is, and the provenance tags of the run that made it:
the model's name and checkpoint hash (:func:`model_tags`), the dunemap version, the precision and the
window settings (:func:`run_tags`). Readers of maps (stats, quicklook, STAC) and the mapping engine
share these names from here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from dunemap import __version__
from dunemap.raster.legend import style_paths

PRODUCT_TAG = "DUNEMAP_PRODUCT"  # dataset tag saying which product a file is: classes, confidence, probabilities
MODEL_TAG = "MODEL"
CHECKPOINT_TAG = "CHECKPOINT_SHA256"
VERSION_TAG = "DUNEMAP_VERSION"
PRECISION_TAG = "PRECISION"  # fp32 or bf16, the precision the model ran in
BACKEND_TAG = "BACKEND"  # torch, onnxruntime or openvino: what ran the model (dunemap.runtime.backends)
BACKEND_PRECISION_TAG = "BACKEND_PRECISION"  # the precision the backend ran in: fp32, bf16 or int8
YEAR_TAG = "EMBEDDING_YEAR"  # the year of the annual embedding a map was predicted from, where known
_YEAR_TAGS = ("aef_year", "AEF_YEAR", "YEAR", "year")  # where embedding rasters state their year (fetch-aef: aef_year)
_YEAR_IN_NAME = re.compile(r"(?<![0-9])(20[1-3][0-9])(?![0-9])")  # aef_namib_2023.tif (gee-script's file prefix)
SCENE_PRIOR_TAG = "SCENE_PRIOR"  # the class shares of new ground the map used (dunemap.trust.prior), when it did


def product_paths(out: str | os.PathLike) -> dict[str, Path]:
    """Final paths of a map's products: the class map itself, its optional companions and its legend files."""
    out = Path(out)
    return {
        "classes": out,
        "confidence": out.with_name(f"{out.stem}_confidence{out.suffix}"),
        "probabilities": out.with_name(f"{out.stem}_probabilities{out.suffix}"),
        "applicability": out.with_name(f"{out.stem}_applicability{out.suffix}"),
        **{f"style_{key}": path for key, path in style_paths(out).items()},
    }


def model_tags(predictor) -> dict[str, str]:
    """The model's registered name, the SHA-256 of the checkpoint bytes it was loaded from (when it came
    from a file: the file as it was read, whatever happened to it since) and the backend that runs it with
    its precision (``engine``: torch unless the predictor is an export, dunemap.runtime.backends)."""
    tags = {MODEL_TAG: str(getattr(predictor.config, "name", "unknown"))}
    sha256 = getattr(predictor, "checkpoint_sha256", None)
    if sha256:
        tags[CHECKPOINT_TAG] = sha256
    tags[BACKEND_TAG] = str(getattr(predictor, "engine", "torch"))
    tags[BACKEND_PRECISION_TAG] = str(getattr(predictor, "precision", "fp32"))
    return tags


def run_tags(config, precision: str | None, model: dict[str, str] | None = None) -> dict[str, str]:
    """Every map product's provenance tags: model (:func:`model_tags`), dunemap version, precision, windows."""
    tags = {**(model or {}), VERSION_TAG: __version__, "WINDOW": str(config.window), "STRIDE": str(config.stride),
            "BLEND": str(config.blend)}
    if precision:
        tags[PRECISION_TAG] = precision
    return tags


def embedding_year(path: str | os.PathLike) -> int | None:
    """The year of an annual embedding raster: its ``aef_year`` (or ``YEAR``) tag, else a year 2010-2039 in its
    file name (``aef_namib_2023.tif``, as ``gee-script`` names exports); None when neither says. A GDAL
    network path (``/vsicurl/...``: an archive tile) is judged by its name alone, never opened again here."""
    import rasterio  # deferred: rasterio (GDAL) is heavy to import and only needed here

    tags = {}
    if not os.fspath(path).startswith("/vsi"):
        with rasterio.open(path) as src:
            tags = src.tags()
    for key in _YEAR_TAGS:
        if str(tags.get(key, "")).strip().isdigit():
            return int(tags[key])
    found = _YEAR_IN_NAME.findall(Path(path).stem)
    return int(found[-1]) if found else None


def source_tags(sources: list[Path]) -> dict[str, str]:
    """Provenance of a map's input kept in its tags: the embedding's year where known. (Not the input's path:
    the same pixels mapped from a copy, a float export or a mosaic give the same bytes.)"""
    year = embedding_year(sources[0]) if sources else None
    return {} if year is None else {YEAR_TAG: str(year)}
