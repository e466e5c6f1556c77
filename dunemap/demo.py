"""The end-to-end demo on built-in synthetic data: generate, train, evaluate, map, compare, report.

Each stage leaves its output in ``DemoConfig.out`` and is skipped when that output is already
complete, so an interrupted demo continues where it stopped (training resumes from ``last.pth``).
The report is honest about new ground: it scores test tiles of scenes seen in training and of new
scenes side by side, maps a scene no training tile came from, and shows that map's truth, prediction
and errors next to a per-pixel random forest trained on the same tiles. ``report.md`` is assembled
from :data:`REPORT_SECTIONS`; a new section is one more function there.
Heavy modules (torch, the pipelines) load inside the functions that use them, so the command line starts
quickly.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import rasterio

from dunemap.io.atomic import atomic_path
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


@dataclass
class DemoResult:
    out: Path
    test_metrics: dict  # every test tile
    test_by_scene: dict[str, dict]  # in_scene / new_scene test tiles, each a metrics dict
    map_metrics: dict  # the network's map of the held-out scene against its truth
    rf_map_metrics: dict  # the per-pixel random forest on the same scene
    areas_km2: dict[str, float]
    report: Path
    comparison: Path  # truth | prediction | errors | random forest, side by side
    seconds: dict[str, float]


def _done(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 0


def run_demo(config: DemoConfig) -> DemoResult:
    """Run every stage (skipping completed ones) and write ``report.md``; returns the headline numbers."""
    # deferred: the CLI imports this module for DemoConfig at start-up; torch, pyproj and shapely load when it runs
    from dunemap.evaluation import EvalConfig, evaluate
    from dunemap.mapping.config import MapConfig
    from dunemap.mapping.engine import map_raster
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

    # 5. Map it: streaming windows, Gaussian blending, a COG with colour table and confidence.
    t0 = time.perf_counter()
    class_map = out / "map" / "heldout_classes.tif"
    predictor = load_predictor(model)
    stride = config.map_stride or config.map_window // 2
    if not _done(class_map) or _mapped_with(class_map) != (config.map_window, stride):  # a changed option: redo
        map_raster(emb, predictor, class_map, MapConfig(window=config.map_window, stride=stride, confidence="uint8",
                                                        progress=config.progress, overwrite=True))
    seconds["map"] = time.perf_counter() - t0

    # 6. The per-pixel random forest of the same training tiles, on the same scene.
    t0 = time.perf_counter()
    rf_map = out / "map" / "heldout_rf_classes.tif"
    if not _done(rf_map):
        _map_with_forest(data, emb, rf_map, len(predictor.class_names), config)
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
    seconds["products"] = time.perf_counter() - t0

    by_scene = {g: m.to_dict(evaluation.class_names) for g, m in evaluation.by_scene.items()}
    result = DemoResult(out, evaluation.metrics.to_dict(evaluation.class_names), by_scene, map_metrics, rf_metrics,
                        area_by_class, out / "report.md", comparison, seconds)
    context = ReportContext(result, config, evaluation.table, class_map, quicklook, shade)
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


def _finished_training(metrics_json: Path, epochs: int) -> bool:
    if not metrics_json.exists():
        return False
    return len(json.loads(metrics_json.read_text())) >= epochs


def _agreement(pred: np.ndarray, truth: np.ndarray, names: list[str]) -> dict:
    from dunemap.metrics import ConfusionMatrix  # deferred: torch (see run_demo)

    cm = ConfusionMatrix(len(names))
    cm.update(pred, truth)
    return cm.compute().to_dict(names)


def _map_with_forest(data: Path, emb: Path, out: Path, num_classes: int, config: DemoConfig) -> None:
    """Classify every pixel of the held-out scene with a random forest fitted on the demo's training tiles."""
    from dunemap.comparison.pixel import PixelConfig, fit_pixel_classifier
    from dunemap.data.dataset import SeedLayoutDataset
    from dunemap.io.aef import dequantize

    forest = fit_pixel_classifier(SeedLayoutDataset(data, "train", num_classes=num_classes),
                                  PixelConfig(method="rf", pixels_per_class=config.rf_pixels_per_class,
                                              n_estimators=config.rf_trees, seed=config.seed, n_jobs=2))
    with rasterio.open(emb) as src:
        values, valid = dequantize(src.read())
        profile = dict(driver="GTiff", height=src.height, width=src.width, count=1, dtype="uint8", nodata=255,
                       crs=src.crs, transform=src.transform, compress="deflate", tiled=True)
    pixels = values[:, valid].T  # (N, 64)
    classes = np.full(valid.shape, 255, dtype=np.uint8)
    classes[valid] = np.concatenate([forest.estimator.predict(pixels[i:i + 65536])
                                     for i in range(0, len(pixels), 65536)]).astype(np.uint8)
    with atomic_path(out) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(classes, 1)


def render_comparison(path: Path, truth: np.ndarray, pred: np.ndarray, rf_pred: np.ndarray,
                      colors: list[tuple[int, int, int]], names: list[str], miou: float | None,
                      rf_miou: float | None) -> Path:
    """Truth, the network's prediction, its errors and the per-pixel random forest's prediction, side by side."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    palette = np.ones((256, 3))
    palette[: len(colors)] = np.asarray(colors, dtype=np.float64) / 255.0
    valid = truth != 255
    errors = np.ones(truth.shape + (3,))
    errors[valid & (pred == truth)] = (0.82, 0.82, 0.82)
    errors[valid & (pred != truth)] = (0.85, 0.1, 0.1)
    wrong = float((pred != truth)[valid].mean()) if valid.any() else 0.0
    fmt = _fmt
    panels = [("truth", palette[truth]), (f"network: mIoU {fmt(miou)}", palette[pred]),
              (f"network errors (red, {100 * wrong:.1f} % of pixels)", errors),
              (f"per-pixel random forest: mIoU {fmt(rf_miou)}", palette[rf_pred])]
    fig = Figure(figsize=(4.2 * len(panels), 5.0), dpi=110)
    FigureCanvasAgg(fig)
    for k, (title, image) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        ax.imshow(image, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    present = np.unique(np.concatenate([truth[valid], pred[pred != 255], rf_pred[rf_pred != 255]]))
    fig.legend(handles=[Patch(facecolor=palette[i], edgecolor="black", label=f"{i} {names[i]}") for i in present],
               loc="lower center", ncol=min(len(present), 6), fontsize=8, frameon=False)
    fig.subplots_adjust(bottom=0.14, wspace=0.04)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return path


def _write_height(scene, path: Path) -> None:
    """The scene's height field as a float32 GeoTIFF on the embedding grid (for the hillshaded quicklook)."""
    height = np.asarray(scene.height, dtype=np.float32)
    profile = dict(driver="GTiff", height=height.shape[0], width=height.shape[1], count=1, dtype="float32",
                   crs=scene.crs, transform=scene.transform, compress="deflate", tiled=True)
    with atomic_path(path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(height, 1)


def _fmt(v) -> str:
    return "n/a" if v is None else f"{100 * v:.2f} %" if isinstance(v, float) else str(v)


# ------------------------------------------------------------------------------------------------ report


@dataclass
class ReportContext:
    """Everything a report section may draw on."""

    result: DemoResult
    config: DemoConfig
    table: str  # the per-class table of the test tiles
    class_map: Path
    quicklook: Path
    hillshade: Path

    def rel(self, path: Path) -> str:
        return str(path.relative_to(self.result.out))


def _scores(m: dict) -> str:
    return f"OA {_fmt(m['oa'])}, mIoU {_fmt(m['miou'])}, Kappa {m['kappa']:.4f}"


def section_title(ctx: ReportContext) -> str:
    return ("# dunemap demo report\n\nSynthetic Mars-analog dune fields (no real data); every number below was "
            "measured by this run.")


def section_headline(ctx: ReportContext) -> str:
    r = ctx.result
    rows = [("test tiles, all", r.test_metrics)]
    rows += [(f"test tiles of {_GROUPS[g]}", m)
             for g, m in r.test_by_scene.items()]
    rows += [(f"held-out {ctx.config.map_region} scene: network", r.map_metrics),
             ("held-out scene: per-pixel random forest, same training tiles", r.rf_map_metrics)]
    lines = ["## Headline: memory of the scene against new ground", "",
             "| what is scored | OA | mIoU | Kappa |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {name} | {_fmt(m['oa'])} | {_fmt(m['miou'])} | {m['kappa']:.4f} |" for name, m in rows]
    gap = None
    if r.map_metrics["miou"] is not None and r.rf_map_metrics["miou"] is not None:
        gap = 100 * (r.map_metrics["miou"] - r.rf_map_metrics["miou"])
        lines += ["", f"On the held-out scene the network scores {gap:+.1f} mIoU points against the per-pixel "
                  "random forest."]
    return "\n".join(lines)


_GROUPS = {"in_scene": "scenes seen in training (in-scene)", "new_scene": "new scenes (never seen in training)"}


def section_comparison(ctx: ReportContext) -> str:
    c = ctx.config
    return "\n".join([
        f"## Held-out scene ({c.map_region}, {c.map_size} x {c.map_size} px, AEF int8)", "",
        f"![truth, prediction, errors, random forest]({ctx.rel(ctx.result.comparison)})", "",
        f"- map: `{ctx.rel(ctx.class_map)}` (COG, colour table, nodata 255), mapped in {c.map_window} px windows, "
        f"stride {c.map_stride or c.map_window // 2} px",
        f"- random forest map: `{ctx.rel(ctx.class_map.with_name('heldout_rf_classes.tif'))}`",
        f"- quicklook: `{ctx.rel(ctx.quicklook)}`; hillshade: `{ctx.rel(ctx.hillshade)}`",
    ])


def section_per_class(ctx: ReportContext) -> str:
    r = ctx.result
    names = list(r.map_metrics["per_class"])
    lines = ["## Per class on the held-out scene (IoU)", "", "| class | network | random forest | mapped area (km2) |",
             "| --- | ---: | ---: | ---: |"]
    for n in names:
        a, b = r.map_metrics["per_class"][n]["iou"], r.rf_map_metrics["per_class"][n]["iou"]
        if a is None and b is None and n not in r.areas_km2:
            continue
        lines.append(f"| {n} | {_fmt(a)} | {_fmt(b)} | {r.areas_km2.get(n, 0.0):.3f} |")
    return "\n".join(lines)


AREA_SAMPLE_POINTS = 600  # reference points sampled from the held-out map for the error-adjusted areas
AREA_MIN_PER_CLASS = 30


def section_areas(ctx: ReportContext) -> str:
    """Error-adjusted areas (Olofsson et al. 2014) from points sampled on the map and labelled from the truth."""
    from dunemap.accuracy.assess import assess_with_truth  # deferred: pyproj and shapely (see run_demo)

    truth = ctx.result.out / "scene" / "heldout_labels.tif"
    comparison = assess_with_truth(ctx.class_map, truth, AREA_SAMPLE_POINTS, AREA_MIN_PER_CLASS, seed=ctx.config.seed)
    hit, counted = comparison.inside_count()
    e = comparison.assessment.estimate
    return "\n".join([
        "## Area per class: mapped, error-adjusted (95 %), truth", "",
        f"{AREA_SAMPLE_POINTS} points sampled from the map by class (at least {AREA_MIN_PER_CLASS} per class), "
        "labelled from the scene's truth as an expert would label them, then the stratified estimator of "
        "Olofsson et al. (2014): the way to report areas from a map (`dunemap sample`, `dunemap accuracy`). "
        f"Overall accuracy {e.overall:.3f} ± {e.ci95(e.overall_se):.3f}; the truth area lies inside the 95 % interval "
        f"for {hit} of {counted} classes.", "",
        "```", comparison.table(), "```"])


def section_test_tiles(ctx: ReportContext) -> str:
    return "\n".join(["## Test tiles, per class", "", "```", ctx.table, "```"])


def section_configuration(ctx: ReportContext) -> str:
    cfg = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(ctx.config).items()}
    return "\n".join(["## Configuration", "", "```json", json.dumps(cfg, indent=2), "```"])


def section_times(ctx: ReportContext) -> str:
    return "\n".join(["## Wall time per stage (s)", "", *[f"- {stage}: {s:.1f}"
                                                           for stage, s in ctx.result.seconds.items()]])


REPORT_SECTIONS: list[Callable[[ReportContext], str]] = [
    section_title, section_headline, section_comparison, section_per_class, section_areas, section_test_tiles,
    section_configuration, section_times,
]
"""The report, in order; each section is a function of the :class:`ReportContext` returning markdown."""


def build_report(ctx: ReportContext, sections: list[Callable[[ReportContext], str]] | None = None) -> str:
    """``report.md``: the sections' markdown, one blank line apart."""
    return "\n\n".join(section(ctx).strip() for section in (sections or REPORT_SECTIONS)) + "\n"
