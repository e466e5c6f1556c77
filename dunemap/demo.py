"""The end-to-end demo on built-in synthetic data: generate, train, evaluate, map, compare, report.

Each stage leaves its output in ``DemoConfig.out`` and is skipped when that output is already
complete, so an interrupted demo continues where it stopped (training resumes from ``last.pth``).
The report is honest about new ground: it scores test tiles of scenes seen in training and of new
scenes side by side, maps a scene no training tile came from, and shows that map's truth, prediction
and errors next to a per-pixel random forest trained on the same tiles (written as a class map like the
network's). ``report.md`` is assembled by :mod:`dunemap.demo_report`; a new section is one more function there.
Heavy modules (torch, the pipelines) load inside the functions that use them, so the command line starts
quickly.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio

from dunemap import __version__
from dunemap.demo_report import DemoResult, ReportContext, build_report, render_comparison, render_trust
from dunemap.io.atomic import atomic_path
from dunemap.raster.legend import ClassLegend
from dunemap.raster.tags import MODEL_TAG, PRODUCT_TAG, VERSION_TAG, product_paths
from dunemap.regions import REGIONS
from dunemap.training.config import RECIPES, recipe_config

log = logging.getLogger(__name__)
_SMALL_DATA = RECIPES["small-data"]


@dataclass
class DemoConfig:
    """The demo's data, recipe and held-out scene; sizes chosen for about ten minutes on 2 CPU cores."""

    out: Path = Path("dunemap_demo")
    regions: list[str] = field(default_factory=lambda: list(REGIONS))  # training regions (all five presets)
    # Many smaller scenes rather than few large ones: each scene draws its own wind, materials, light and
    # landform parameters, and a class seen in few scenes is learnt as those scenes' look (docs/quality.md).
    scenes_per_region: int = 6
    scene_size: int = 384  # pixels (10 m) per synthetic scene side: 3 x 3 tiles
    region_px: float = 320.0  # typical width of one landform region of the training scenes, pixels
    split_by: str = "scene"  # whole scenes held out for val/test (dunemap.data.splits.SPLIT_MODES)
    tile: int = 128  # training tile side
    # the training recipe: dunemap train --recipe small-data (dunemap.training.config.RECIPES), measured here
    model: str = _SMALL_DATA["model"]  # mit_b0
    epochs: int = _SMALL_DATA["epochs"]  # 32
    batch_size: int = _SMALL_DATA["batch_size"]  # 8
    lr: float = _SMALL_DATA["lr"]  # 1.2e-3: 20x the published LR, from scratch: best of 3e-4..2.4e-3 (docs/quality.md)
    augment: str = _SMALL_DATA["augment"]  # flips, quarter turns and a per-tile embedding shift (scene-to-scene look)
    class_weights: str = _SMALL_DATA["class_weights"]  # loss weights share ** -0.5: rare landforms count more
    map_region: str = "namib"  # region of the held-out scene that is mapped
    map_size: int = 1024  # held-out scene side, pixels
    map_window: int = 128  # mapping window side: the context the model trained on (the tile)
    # Half the window: every pixel then lies at least a quarter window (32 px) inside some window, the context
    # a pixel's label needs (docs/quality.md, "Context at the window's edge"); 0 = half of map_window.
    map_stride: int = 0
    rf_pixels_per_class: int = 500  # the per-pixel random forest baseline: labelled pixels per class
    rf_trees: int = 100
    seed: int = 0
    precision: str = "auto"
    progress: bool = True


def _done(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 0


def run_demo(config: DemoConfig) -> DemoResult:
    """Run every stage (skipping completed ones) and write ``report.md``; returns the headline numbers."""
    # deferred: the CLI imports this module for DemoConfig at start-up; torch, pyproj and shapely load when it runs
    from dunemap.evaluation import EvalConfig, evaluate
    from dunemap.mapping.config import MapConfig
    from dunemap.mapping.engine import applicability_threshold, map_raster, predictor_legend
    from dunemap.products.quicklook import render_quicklook
    from dunemap.products.stats import class_areas
    from dunemap.runtime import ModelSpec, load_predictor
    from dunemap.synth.dataset import write_dataset
    from dunemap.synth.scene import SceneConfig, generate_scene
    from dunemap.synth.writers import write_hillshade_png, write_scene_geotiff
    from dunemap.training import train
    from dunemap.training.loop import LAST

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}

    # 1. Synthetic training data: five regions; whole scenes held out for val/test, the rest split by blocks.
    t0 = time.perf_counter()
    data = out / "data"
    if not _done(data / "manifest.csv"):
        write_dataset(data, regions=config.regions, scenes_per_region=config.scenes_per_region,
                      scene_size=config.scene_size, tile=config.tile, seed=config.seed, region_px=config.region_px,
                      split_by=config.split_by, overwrite=True, progress=config.progress)
    seconds["synthesise"] = time.perf_counter() - t0

    # 2. Train a small text-fused SegFormer (catalog descriptions encoded by the bundled MiniLM).
    t0 = time.perf_counter()
    run = out / "run"
    train_config = recipe_config("small-data", data_root=data, save_dir=run, model=config.model,
                                 epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                                 augment=config.augment, class_weights=config.class_weights, seed=config.seed,
                                 precision=config.precision, device="cpu", progress=config.progress,
                                 resume=(run / LAST).exists())
    if not _finished_training(run / "metrics.json", config.epochs):
        train(train_config)
    seconds["train"] = time.perf_counter() - t0

    # 3. Evaluate the best checkpoint on the test tiles: scenes seen in training and new scenes apart.
    t0 = time.perf_counter()
    weights = run / "best_model.pth"
    model = ModelSpec(weights, device="cpu", precision=config.precision)
    evaluation = evaluate(EvalConfig(data_root=data, model=model, split="test", out_dir=out / "eval_test",
                                     progress=config.progress, overwrite=True))  # the demo's own report, redone each run
    seconds["evaluate"] = time.perf_counter() - t0

    # 4. A held-out georeferenced scene (a seed never used for training), stored as AEF int8.
    t0 = time.perf_counter()
    scene_dir = out / "scene"
    scene_cfg = SceneConfig(size=(config.map_size, config.map_size), region=config.map_region,
                            seed=config.seed + 10_000)
    emb, truth = scene_dir / "heldout_emb.tif", scene_dir / "heldout_labels.tif"
    dem, shade = scene_dir / "heldout_height.tif", scene_dir / "heldout_hillshade.png"
    if not all(_done(p) for p in (emb, truth, dem, shade)):
        scene = generate_scene(scene_cfg)
        write_scene_geotiff(scene, emb, truth, dtype="int8")
        _write_height(scene, dem)
        write_hillshade_png(scene, shade)
    seconds["scene"] = time.perf_counter() - t0

    # 5. Map it: streaming windows, Gaussian blending, a COG with colour table, confidence and applicability.
    t0 = time.perf_counter()
    class_map = out / "map" / "heldout_classes.tif"
    predictor = load_predictor(model)
    stride = config.map_stride or config.map_window // 2
    aoa = applicability_threshold(predictor) is not None  # fitted at the end of training (TrainConfig.calibrate)
    if (not _done(class_map) or _mapped_with(class_map) != (config.map_window, stride)  # a changed option: redo
            or (aoa and not _done(product_paths(class_map)["applicability"]))):
        map_raster(emb, predictor, class_map, MapConfig(window=config.map_window, stride=stride, confidence="uint8",
                                                        applicability=aoa, progress=config.progress, overwrite=True))
    seconds["map"] = time.perf_counter() - t0

    # 6. The per-pixel random forest of the same training tiles, on the same scene.
    t0 = time.perf_counter()
    rf_map = out / "map" / "heldout_rf_classes.tif"
    if not _done(rf_map) or _product_of(rf_map) != "classes":  # a plain GeoTIFF of an earlier demo: redo
        _map_with_forest(data, emb, rf_map, predictor_legend(predictor), config)
    seconds["baseline"] = time.perf_counter() - t0

    # 7. Map products: agreement with the scene's truth, areas, quicklook, truth/prediction/errors side by side.
    t0 = time.perf_counter()
    names = list(predictor.class_names)
    with rasterio.open(class_map) as m, rasterio.open(rf_map) as f, rasterio.open(truth) as t:
        pred, rf_pred, true = m.read(1), f.read(1), t.read(1)
    map_metrics, rf_metrics = _agreement(pred, true, names), _agreement(rf_pred, true, names)
    area_by_class = {r.class_name: r.area_km2 for r in class_areas(class_map).rows if r.pixels}
    quicklook = render_quicklook(class_map, out / "map" / "heldout_quicklook.png", hillshade_from=dem,
                                 title=f"dunemap demo: held-out {config.map_region} scene")
    comparison = render_comparison(out / "map" / "heldout_comparison.png", true, pred, rf_pred, predictor.colors,
                                   names, map_metrics["miou"], rf_metrics["miou"])
    trust_png, trust = render_trust(out / "map" / "heldout_trust.png", class_map, true)
    seconds["products"] = time.perf_counter() - t0

    by_scene = {g: m.to_dict(evaluation.class_names) for g, m in evaluation.by_scene.items()}
    result = DemoResult(out, evaluation.metrics.to_dict(evaluation.class_names), by_scene, map_metrics, rf_metrics,
                        area_by_class, out / "report.md", comparison, seconds, trust=trust,
                        environment=_environment(config.precision))
    context = ReportContext(result, config, evaluation.table, class_map, quicklook, shade, trust_png)
    with atomic_path(result.report) as tmp:
        tmp.write_text(build_report(context))
    return result


def _mapped_with(class_map: Path) -> tuple[int, int] | None:
    """(window, stride) a finished class map was made with, from its tags (None when it has none)."""
    with rasterio.open(class_map) as src:
        tags = src.tags()
    try:
        return int(tags["WINDOW"]), int(tags["STRIDE"])
    except (KeyError, ValueError):
        return None


def _product_of(path: Path) -> str | None:
    with rasterio.open(path) as src:
        return src.tags().get(PRODUCT_TAG)


def _environment(precision: str) -> dict:
    """What two runs must share to give the same figures: the CPU (model and speed flags), threads, torch and the
    precision trained in."""
    import torch  # deferred (see run_demo)

    from dunemap.runtime.device import describe_cpu, resolve_precision

    return {"cpu": describe_cpu(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "precision": resolve_precision(precision, torch.device("cpu"))}


def _finished_training(metrics_json: Path, epochs: int) -> bool:
    if not metrics_json.exists():
        return False
    return len(json.loads(metrics_json.read_text())) >= epochs


def _agreement(pred: np.ndarray, truth: np.ndarray, names: list[str]) -> dict:
    from dunemap.metrics import ConfusionMatrix  # deferred: torch (see run_demo)

    cm = ConfusionMatrix(len(names))
    cm.update(pred, truth)
    return cm.compute().to_dict(names)


def _map_with_forest(data: Path, emb: Path, out: Path, legend: ClassLegend, config: DemoConfig) -> None:
    """Classify every pixel of the held-out scene with a random forest fitted on the demo's training tiles, and
    write it as ``dunemap map`` writes a class map (colour table, overviews, legend companions)."""
    from dunemap.comparison.pixel import PixelConfig, fit_pixel_classifier
    from dunemap.data.dataset import SeedLayoutDataset
    from dunemap.io.aef import dequantize
    from dunemap.mapping.writer import GridSpec, write_class_map

    forest = fit_pixel_classifier(SeedLayoutDataset(data, "train", num_classes=legend.num_classes),
                                  PixelConfig(method="rf", pixels_per_class=config.rf_pixels_per_class,
                                              n_estimators=config.rf_trees, seed=config.seed, n_jobs=2))
    with rasterio.open(emb) as src:
        values, valid = dequantize(src.read())
        grid = GridSpec(src.height, src.width, src.crs, src.transform)
    pixels = values[:, valid].T  # (N, 64)
    classes = np.full(valid.shape, 255, dtype=np.uint8)
    classes[valid] = np.concatenate([forest.estimator.predict(pixels[i:i + 65536])
                                     for i in range(0, len(pixels), 65536)]).astype(np.uint8)
    tags = {MODEL_TAG: f"per-pixel random forest ({config.rf_trees} trees, {config.rf_pixels_per_class} pixels per "
                       "class of the demo's training tiles)", VERSION_TAG: __version__}
    write_class_map(out, classes, grid, legend, tags)


def _write_height(scene, path: Path) -> None:
    """The scene's height field as a float32 GeoTIFF on the embedding grid (for the hillshaded quicklook)."""
    height = np.asarray(scene.height, dtype=np.float32)
    profile = dict(driver="GTiff", height=height.shape[0], width=height.shape[1], count=1, dtype="float32",
                   crs=scene.crs, transform=scene.transform, compress="deflate", tiled=True)
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(height, 1)
