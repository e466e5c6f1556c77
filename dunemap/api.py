"""The Python API for notebooks and scripts: the functions ``import dunemap`` exposes at the top level.

Each is a thin front to the library function the command line calls, taking either the command's
config dataclass or its options as keywords; :func:`predict_array` runs the sliding-window, blended
prediction of ``dunemap map`` on an in-memory array, block by block with the same windows and the
same blending order, so its classes equal those of ``map`` on the same array written as a GeoTIFF.
Heavy modules (torch, rasterio, the pipelines) load inside each function on first call, so ``import dunemap``
stays cheap.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from dunemap.errors import ConfigError, InputError
from dunemap.registry import choose

if TYPE_CHECKING:  # heavy modules load on first call, not on ``import dunemap``
    import pandas as pd

    from dunemap.evaluation import EvalConfig, EvalResult
    from dunemap.mapping.config import MapConfig
    from dunemap.mapping.engine import MapResult
    from dunemap.runtime import Predictor
    from dunemap.synth.scene import Scene, SceneConfig
    from dunemap.training.config import TrainConfig
    from dunemap.training.loop import TrainResult

PathLike = str | os.PathLike


def _config(config_class: type, config: Any, options: dict) -> Any:
    if config is None:
        return config_class(**options)
    if not isinstance(config, config_class):
        raise ConfigError(f"expected a {config_class.__name__}, got {type(config).__name__}")
    return replace(config, **options) if options else config


def train(config: TrainConfig | None = None, **options: Any) -> TrainResult:
    """Train a (text-fused) SegFormer on a seed-layout dataset, as ``dunemap train`` does.

    Args:
        config: a :class:`dunemap.training.TrainConfig`; or leave it out and give its fields as keywords,
            at least ``data_root`` (img_dir/ann_dir dataset) and ``save_dir`` (where checkpoints go).
        **options: TrainConfig fields (``model``, ``epochs``, ``lr``, ``batch_size``, ``in_channels``, ...),
            replacing those of ``config``. ``recipe`` (``published``, the default, or ``small-data``:
            :data:`dunemap.training.config.RECIPES`) sets the recipe's values first; the other options win.

    Returns:
        :class:`dunemap.training.TrainResult`: ``best_checkpoint`` (``save_dir/best_model.pth``), ``last_checkpoint``,
        ``best_val_miou``, ``best_epoch`` and the per-epoch ``history``. ``save_dir`` also gets
        ``metrics.csv``, ``metrics.json`` and the resolved ``config.yaml``.

    Raises:
        ConfigError: an option that cannot train (e.g. ``epochs=0``, unknown model).
        DatasetError: a bad or missing file of the dataset, named.
        TrainingDivergedError: the loss stayed non-finite.
    """
    from dunemap.training.config import RECIPES, TrainConfig, recipe_config  # deferred, as below
    from dunemap.training.loop import train as run  # deferred: torch loads on first call

    if config is None:
        return run(recipe_config(options.pop("recipe", "published"), **options))
    if "recipe" in options:  # the recipe's values, then the options given
        options = {**choose(RECIPES, options["recipe"], "recipe"), **options}
    return run(_config(TrainConfig, config, options))


def evaluate(config: EvalConfig | None = None, **options: Any) -> EvalResult:
    """Score a checkpoint on one split of a dataset (OA, mIoU, Kappa, F1), exact fp32 by default.

    Args:
        config: a :class:`dunemap.evaluation.EvalConfig`, or its fields as keywords: ``data_root``,
            ``model`` (a :class:`dunemap.runtime.ModelSpec`) or the ModelSpec fields one by one (``weights``,
            ``precision`` (default fp32), ``device``, ...), and optionally ``split`` ("test"), ``out_dir``, ...
        **options: EvalConfig fields replacing those of ``config``.

    Returns:
        :class:`dunemap.evaluation.EvalResult` with ``metrics`` (``.oa``, ``.miou``, ``.kappa``), the confusion
        ``matrix``, a printable ``table`` and the written ``json_path`` / ``png_path``.

    Raises:
        OutputExistsError: the report already exists in ``out_dir`` and ``overwrite`` is False.
        CheckpointError / DatasetError: an unreadable checkpoint or a bad dataset file, named.
    """
    from dunemap.evaluation import EvalConfig  # deferred: torch loads on first call
    from dunemap.evaluation import evaluate as run

    return run(_config(EvalConfig, config, options))


def load_predictor(weights: PathLike, device: str = "auto", precision: str = "auto",
                   text_embeddings: PathLike | None = None, catalog: PathLike | None = None,
                   replace_text: bool = False) -> Predictor:
    """Load a checkpoint (dunemap's or a published MADS ``state_dict``) ready to predict.

    Args:
        weights: the ``.pth`` file.
        device: "auto" (first GPU, else CPU), "cpu", "cuda" or "cuda:N".
        precision: "auto" (bf16 where supported natively), "fp32" or "bf16".
        text_embeddings: (K, D) ``.npy`` of class texts; needed only for a MADS ``state_dict``.
        catalog: class catalog; for an open-vocabulary model, the classes to predict.
        replace_text: let ``text_embeddings`` replace the text a dunemap checkpoint carries.

    Returns:
        a :class:`dunemap.runtime.Predictor` (``class_names``, ``colors``, ``in_channels``,
        ``predict(x)`` on a torch tensor or numpy array).

    Raises:
        CheckpointError: the file is not a checkpoint, or its text does not match.
    """
    from dunemap import runtime  # deferred: torch loads on first call

    return runtime.load_predictor(runtime.ModelSpec(weights, device, precision, text_embeddings, catalog, replace_text))


def map_raster(input: PathLike | list[PathLike], weights: PathLike | Predictor, out: PathLike,
               config: MapConfig | None = None, **options: Any) -> MapResult:
    """Map an embedding raster (GeoTIFF/VRT, float or AEF int8, or tiles of one grid) to a class-map COG.

    Args:
        input: the raster, or a list of tiles mosaicked on the fly.
        weights: a checkpoint path (loaded with :func:`load_predictor`) or a loaded predictor.
        out: the class map to write; companions (``OUT_confidence.tif`` ...) go beside it.
        config: a :class:`dunemap.mapping.config.MapConfig`, or its fields as keywords (``window``,
            ``stride``, ``blend``, ``confidence``, ``probabilities``, ``overwrite``, ``progress`` ...).

    Returns:
        :class:`dunemap.mapping.engine.MapResult`: ``path``, ``products`` (name -> path), size and timings.

    Raises:
        OutputExistsError: ``out`` exists and ``overwrite`` is False.
        InputError: the raster has the wrong band count or dtype, or no CRS (unless ``allow_no_crs``).
    """
    from dunemap.mapping.config import MapConfig  # deferred: torch and rasterio load on first call
    from dunemap.mapping.engine import map_raster as run

    predictor = load_predictor(weights) if isinstance(weights, (str, os.PathLike)) else weights
    return run(input, predictor, out, _config(MapConfig, config, options))


@dataclass
class ArrayPrediction:
    """What :func:`predict_array` returns: north-up arrays of the input's height and width."""

    classes: np.ndarray  # (H, W) uint8 class ids, 255 = nodata
    confidence: np.ndarray  # (H, W) float32 maximum class probability, NaN = nodata
    probabilities: np.ndarray | None  # (K, H, W) float32 blended softmax (NaN = nodata), when asked for
    class_names: list[str]


def predict_array(predictor: Predictor, array: np.ndarray, config: MapConfig | None = None,
                  probabilities: bool = False, **options: Any) -> ArrayPrediction:
    """Predict an in-memory (C, H, W) embedding array exactly as ``dunemap map`` predicts a raster.

    The array is cut into the blocks and overlapping windows ``map`` would use for a raster of its
    size and dtype; windows are predicted and blended with the same weights, and blocks finished in
    the same order, so ``classes`` equal those of ``map`` on the array written as a GeoTIFF.

    Args:
        predictor: from :func:`load_predictor`.
        array: (C, H, W) float embeddings (NaN/inf or an all-zero vector = nodata) or AEF int8 codes
            (-128 = nodata), C = the model's bands.
        config: window settings (:class:`~dunemap.mapping.config.MapConfig`: ``window``, ``stride``, ``blend``,
            ``batch_size``, ``block_size``, ``backend``), or those fields as keywords; defaults are ``map``'s
            (``backend="auto"``: torch, or an ONNX Runtime / OpenVINO export measured faster and as faithful
            on the array; ``backend="torch"`` runs ``predictor`` as it is).
        probabilities: also return the (K, H, W) blended class probabilities.

    Returns:
        :class:`ArrayPrediction` with ``classes`` (uint8, 255 = nodata), ``confidence``, ``probabilities``
        (None unless asked for) and the ``class_names``.

    Raises:
        InputError: not a (C, H, W) array of the model's band count, or not float / int8.
    """
    from dunemap.mapping.backend import array_samples, choose_backend, planned_windows  # deferred: loads torch
    from dunemap.mapping.config import MapConfig  # deferred: torch and rasterio load on first call
    from dunemap.mapping.predict import batch_size_for, finish_block, predict_block_data, split_contribution
    from dunemap.mapping.windows import plan_blocks
    from dunemap.raster.reader import AEF_DTYPE, BlockData, valid_pixels

    config = _config(MapConfig, config, options).for_model(predictor.train_tile)  # validated, windows resolved
    array = np.asarray(array)
    if array.ndim != 3 or array.shape[0] != predictor.in_channels:
        raise InputError(f"array of shape {array.shape}: expected (C, H, W) with C = {predictor.in_channels} bands")
    aef = array.dtype == np.dtype(AEF_DTYPE)
    if not aef and array.dtype.kind != "f":
        raise InputError(f"array dtype {array.dtype}: expected float embeddings or AEF int8 codes")
    valid = valid_pixels(array)
    if aef:  # as the reader stores a block: int8 codes, nodata pixels -128 in every band
        data = array.copy()
        data[:, ~valid] = -128
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            data = array.astype(np.float32)
        data[:, ~valid] = 0.0
    _, height, width = data.shape
    blocks = plan_blocks(height, width, config.window, config.stride,
                         config.resolved_block_size(array.shape[0] * (1 if aef else 4)))
    planned = planned_windows(height, width, config)
    config = replace(config, applicability=False)
    runner, _ = choose_backend(predictor, config, lambda: array_samples(data, valid, config), planned, codes=aef)
    classes = np.empty((height, width), np.uint8)
    confidence = np.empty((height, width), np.float32)
    probs = np.empty((predictor.num_classes, height, width), np.float32) if probabilities else None
    parts: dict[int, dict] = {b.index: {} for b in blocks}
    batch_size = batch_size_for(runner, config)  # as map batches its windows
    for block in blocks:  # row-major, as map predicts them; each block is finished once its contributors are in
        if block.extent is not None:
            rows, cols = block.extent.slices()
            contribution = predict_block_data(BlockData(block.extent, data[:, rows, cols], valid[rows, cols]),
                                              runner, block, config, batch_size)
            for target, part in split_contribution(contribution, blocks).items():
                parts[target][contribution.source] = part
        for ready in blocks:
            if parts.get(ready.index) is not None and all(s in parts[ready.index] for s in ready.contributors):
                done = finish_block(ready, parts.pop(ready.index))
                parts[ready.index] = None  # finished
                rows, cols = ready.core.slices()
                classes[rows, cols], confidence[rows, cols] = done.classes, done.confidence
                if probs is not None:
                    probs[:, rows, cols] = done.probabilities
    return ArrayPrediction(classes, confidence, probs, list(predictor.class_names))


def map_statistics(map_path: PathLike, zones: PathLike | None = None, zone_field: str | None = None,
                   out: PathLike | None = None) -> pd.DataFrame:
    """Area of each class of a class map (per zone), in km² from true ellipsoidal pixel areas.

    Args:
        map_path: a class map (uint8 GeoTIFF with a colour table / class names, 255 = nodata).
        zones: optional polygons (GeoPackage, shapefile, GeoJSON ...) to summarise within.
        zone_field: attribute naming each zone (default: ``zone_<feature index>``).
        out: optionally also write this report (``.csv`` or ``.json``; the other goes beside it; never over an
            existing file).

    Returns:
        a pandas DataFrame, one row per zone and class: ``zone``, ``class_id``, ``class_name``, ``pixels``,
        ``area_km2``, ``fraction`` (and ``inside_km2``/``outside_km2`` with an applicability companion).

    Raises:
        InputError: not a class map, or no CRS (areas unknown); OutputExistsError: ``out`` exists.
    """
    import pandas as pd

    from dunemap.products.stats import class_areas
    from dunemap.products.stats import map_statistics as write_statistics

    if zone_field and not zones:
        raise InputError(f"zone_field {zone_field!r} given without zones")
    if out is not None:
        stats = write_statistics(map_path, out, zones, zone_field)
    else:
        stats = class_areas(map_path, zones, zone_field)
    frame = pd.DataFrame([vars(r) for r in stats.rows])
    if stats.applicability is None:
        frame = frame.drop(columns=["inside_km2", "outside_km2"], errors="ignore")
    return frame


def generate_scene(config: SceneConfig | None = None, **options: Any) -> Scene:
    """Synthesise one georeferenced dune-field scene (labels, heights, 64-band AEF-like embeddings) in memory.

    Args:
        config: a :class:`dunemap.synth.SceneConfig`, or its fields as keywords: ``region`` ("namib"),
            ``size`` (pixels, an int or (height, width)), ``seed``, ``nodata_holes``, ``region_px`` ...

    Returns:
        :class:`dunemap.synth.Scene`: ``embedding`` (64, H, W) float32, ``label`` (H, W) uint8 (255 = nodata),
        ``height``, ``valid``, ``crs``, ``transform``; the same config always gives the same arrays.

    Raises:
        ConfigError: an unknown region or a size too small for a scene.
    """
    from dunemap.synth.scene import SceneConfig  # deferred: scipy loads on first call
    from dunemap.synth.scene import generate_scene as run

    return run(_config(SceneConfig, config, options))
