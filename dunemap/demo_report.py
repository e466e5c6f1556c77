"""The demo's report: ``report.md`` from :data:`REPORT_SECTIONS`, and the figures it shows beside the map.

Each section is a function of a :class:`ReportContext` returning markdown; a new section is one more
function in the list. The report explains its own numbers: which classes the held-out scene lacks, why
the pooled test-tile score can exceed both of its parts, which confusions make up the errors, where
the map says it may be trusted, and what a fresh run on another machine reproduces.
Heavy modules (matplotlib, pyproj) load inside the functions that use them, so the command line starts quickly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from dunemap.io.atomic import atomic_path
from dunemap.raster.legend import NODATA_CLASS
from dunemap.raster.tags import product_paths

TOP_CONFUSIONS = 3  # confusions named under the error panel and in the report


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
    trust: dict = field(default_factory=dict)  # confidence and area of applicability of the map (trust_summary)
    environment: dict = field(default_factory=dict)  # what a fresh run must share to reproduce the figures


def _fmt(v) -> str:
    return "n/a" if v is None else f"{100 * v:.2f} %" if isinstance(v, float) else str(v)


def top_confusions(matrix: np.ndarray | list, names: list[str], n: int = TOP_CONFUSIONS) -> list[tuple[str, str, float]]:
    """The ``n`` largest off-diagonal cells of a (truth, prediction) confusion matrix as
    (true class, predicted class, share of all wrong pixels), largest first; none when nothing is wrong."""
    m = np.asarray(matrix, dtype=np.int64)
    wrong = m.copy()
    np.fill_diagonal(wrong, 0)
    total = int(wrong.sum())
    if total == 0:
        return []
    order = np.argsort(-wrong, axis=None, kind="stable")[:n]
    cells = [np.unravel_index(k, wrong.shape) for k in order]
    return [(names[t], names[p], wrong[t, p] / total) for t, p in cells if wrong[t, p] > 0]


def confusions_text(confusions: list[tuple[str, str, float]]) -> str:
    return ", ".join(f"{t} as {p} {100 * share:.0f} %" for t, p, share in confusions)


def render_comparison(path: Path, truth: np.ndarray, pred: np.ndarray, rf_pred: np.ndarray,
                      colors: list[tuple[int, int, int]], names: list[str], miou: float | None,
                      rf_miou: float | None) -> Path:
    """Truth, the network's prediction, its errors (with the confusions that dominate them) and the per-pixel
    random forest's prediction, side by side."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # deferred: matplotlib
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from dunemap.metrics import ConfusionMatrix  # deferred: torch

    palette = np.ones((256, 3))
    palette[: len(colors)] = np.asarray(colors, dtype=np.float64) / 255.0
    valid = truth != NODATA_CLASS
    errors = np.ones(truth.shape + (3,))
    errors[valid & (pred == truth)] = (0.82, 0.82, 0.82)
    errors[valid & (pred != truth)] = (0.85, 0.1, 0.1)
    wrong = float((pred != truth)[valid].mean()) if valid.any() else 0.0
    cm = ConfusionMatrix(len(names))
    cm.update(pred, truth)
    dominant = top_confusions(cm.matrix, names)
    panels = [("truth", palette[truth]), (f"network: mIoU {_fmt(miou)}", palette[pred]),
              (f"network errors (red, {100 * wrong:.1f} % of pixels)", errors),
              (f"per-pixel random forest: mIoU {_fmt(rf_miou)}", palette[rf_pred])]
    fig = Figure(figsize=(4.2 * len(panels), 5.0), dpi=110)
    FigureCanvasAgg(fig)
    for k, (title, image) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        ax.imshow(image, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        if k == 2 and dominant:  # the error panel names what the errors are
            ax.set_xlabel("most errors (truth as predicted):\n" + "\n".join(
                f"{t} as {p}: {100 * s:.0f} %" for t, p, s in dominant), fontsize=8)
    present = np.unique(np.concatenate([truth[valid], pred[pred != NODATA_CLASS], rf_pred[rf_pred != NODATA_CLASS]]))
    fig.legend(handles=[Patch(facecolor=palette[i], edgecolor="black", label=f"{i} {names[i]}") for i in present],
               loc="lower center", ncol=min(len(present), 6), fontsize=8, frameon=False)
    fig.subplots_adjust(bottom=0.2, wspace=0.04)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight", metadata={"Description": confusions_text(dominant)})
    return path


def trust_summary(class_map: Path, truth: np.ndarray) -> dict:
    """Confidence and area of applicability of a map against its truth, from the map's companion rasters."""
    paths = product_paths(class_map)
    with rasterio.open(class_map) as m:
        pred = m.read(1)
    valid = (truth != NODATA_CLASS) & (pred != NODATA_CLASS)
    correct = valid & (pred == truth)
    out: dict[str, Any] = {"confidence": None, "applicability": None}
    if paths["confidence"].exists():
        with rasterio.open(paths["confidence"]) as src:
            conf = src.read(1, masked=True).astype(np.float64) * src.scales[0]
        conf_ok = valid & ~np.ma.getmaskarray(conf)
        out["confidence"] = {
            "mean_correct": float(conf[conf_ok & correct].mean()) if (conf_ok & correct).any() else None,
            "mean_wrong": float(conf[conf_ok & ~correct].mean()) if (conf_ok & ~correct).any() else None,
            "path": str(paths["confidence"])}
    if paths["applicability"].exists():
        with rasterio.open(paths["applicability"]) as src:
            inside = src.read(2) == 1
        share_out = float((~inside[valid]).mean()) if valid.any() else 0.0
        out["applicability"] = {
            "outside_share": share_out,
            "accuracy_inside": float(correct[valid & inside].mean()) if (valid & inside).any() else None,
            "accuracy_outside": float(correct[valid & ~inside].mean()) if (valid & ~inside).any() else None,
            "path": str(paths["applicability"])}
    return out


def render_trust(path: Path, class_map: Path, truth: np.ndarray) -> tuple[Path | None, dict]:
    """Confidence and area of applicability of the map as pictures, with how they relate to its errors;
    (None, summary) when the map has neither companion."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # deferred: matplotlib
    from matplotlib.figure import Figure

    summary = trust_summary(class_map, truth)
    paths = product_paths(class_map)
    panels = []
    if summary["confidence"] is not None:
        with rasterio.open(paths["confidence"]) as src:
            conf = src.read(1, masked=True).astype(np.float64) * src.scales[0]
        c = summary["confidence"]
        panels.append(((f"confidence (calibrated)\nmean {_fmt(c['mean_correct'])} where right, "
                       f"{_fmt(c['mean_wrong'])} where wrong"), conf.filled(np.nan), "viridis"))
    if summary["applicability"] is not None:
        with rasterio.open(paths["applicability"]) as src:
            mask = src.read(2).astype(np.float64)
        mask[mask == NODATA_CLASS] = np.nan
        a = summary["applicability"]
        panels.append(((f"area of applicability: {100 * a['outside_share']:.1f} % outside (dark)\naccuracy "
                       f"{_fmt(a['accuracy_inside'])} inside, {_fmt(a['accuracy_outside'])} outside"), mask, "cividis"))
    if not panels:
        return None, summary
    fig = Figure(figsize=(4.6 * len(panels), 5.0), dpi=110)
    FigureCanvasAgg(fig)
    for k, (title, image, cmap) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        im = ax.imshow(image, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        if cmap == "viridis":
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return path, summary


# ------------------------------------------------------------------------------------------------ report


@dataclass
class ReportContext:
    """Everything a report section may draw on."""

    result: DemoResult
    config: Any  # dunemap.demo.DemoConfig
    table: str  # the per-class table of the test tiles
    class_map: Path
    quicklook: Path
    hillshade: Path
    trust_figure: Path | None = None  # confidence and applicability pictures (render_trust)

    def rel(self, path: Path) -> str:
        return str(Path(path).relative_to(self.result.out))


def section_title(ctx: ReportContext) -> str:
    return ("# dunemap demo report\n\nSynthetic Mars-analog dune fields (no real data); every number below was "
            "measured by this run.")


_GROUPS = {"in_scene": "scenes seen in training (in-scene)", "new_scene": "new scenes (never seen in training)"}
_SHORT = {"in_scene": "in-scene", "new_scene": "new scenes"}


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
    if r.map_metrics["miou"] is not None and r.rf_map_metrics["miou"] is not None:
        gap = 100 * (r.map_metrics["miou"] - r.rf_map_metrics["miou"])
        lines += ["", (f"On the held-out scene the network scores {gap:+.1f} mIoU points against the per-pixel "
                  "random forest.")]
    note = pooled_note(r.test_metrics, r.test_by_scene)
    return "\n".join(lines + (["", note] if note else []))


def pooled_note(pooled: dict, parts: dict[str, dict]) -> str:
    """Why the mIoU of all test tiles is not between its parts' (empty when it is)."""
    scores = [m["miou"] for m in parts.values() if m["miou"] is not None]
    if pooled["miou"] is None or len(scores) < 2 or min(scores) <= pooled["miou"] <= max(scores):
        return ""
    direction = "above" if pooled["miou"] > max(scores) else "below"
    lines = [(f"The mIoU of all test tiles ({_fmt(pooled['miou'])}) is {direction} both of its parts: mIoU is the "
             "mean of per-class IoUs, each computed over the pixels scored together, not a mean of the parts' "
             "mIoUs. A class that one part lacks but that is predicted there scores IoU 0 in that part and pulls "
             "its mean down; pooled, the same false pixels are set against the class's true pixels of the other "
             f"part. Per class (all / {' / '.join(_SHORT.get(g, g) for g in parts)}):")]
    for name, c in pooled["per_class"].items():
        if c["iou"] is None:
            continue
        each = []
        for m in parts.values():
            pc = m["per_class"][name]
            absent = " (absent, predicted)" if pc["support"] == 0 and pc["iou"] is not None else ""
            each.append(f"{_fmt(pc['iou'])}{absent}" if pc["iou"] is not None else "not present")
        lines.append(f"- {name}: {_fmt(c['iou'])} / {' / '.join(each)}")
    return "\n".join(lines)


def section_comparison(ctx: ReportContext) -> str:
    c, r = ctx.config, ctx.result
    dominant = top_confusions(r.map_metrics["confusion_matrix"], list(r.map_metrics["per_class"]))
    rf_map = ctx.class_map.with_name("heldout_rf_classes.tif")
    lines = [
        f"## Held-out scene ({c.map_region}, {c.map_size} x {c.map_size} px, AEF int8)", "",
        f"![truth, prediction, errors, random forest]({ctx.rel(r.comparison)})", ""]
    if dominant:
        lines += [(f"Most of the network's wrong pixels are (truth as predicted): {confusions_text(dominant)} "
                  "of all wrong pixels."), ""]
    lines += [
        (f"- map: `{ctx.rel(ctx.class_map)}` (COG, colour table, nodata 255), mapped in {c.map_window} px windows, "
        f"stride {c.map_stride or c.map_window // 2} px"),
        f"- random forest map: `{ctx.rel(rf_map)}` (the same kind of COG: colour table, overviews, QGIS style)",
        f"- quicklook: `{ctx.rel(ctx.quicklook)}`; hillshade: `{ctx.rel(ctx.hillshade)}`",
    ]
    return "\n".join(lines)


def section_trust(ctx: ReportContext) -> str:
    """Where the map says it may be trusted: calibrated confidence and the area of applicability."""
    t = ctx.result.trust
    lines = ["## Where the map may be trusted", ""]
    if ctx.trust_figure is not None:
        lines += [f"![confidence and area of applicability]({ctx.rel(ctx.trust_figure)})", ""]
    if t.get("confidence"):
        c = t["confidence"]
        lines.append(f"- confidence (`{ctx.rel(Path(c['path']))}`, calibrated maximum class probability): mean "
                     f"{_fmt(c['mean_correct'])} on right pixels, {_fmt(c['mean_wrong'])} on wrong ones")
    if t.get("applicability"):
        a = t["applicability"]
        lines.append(f"- area of applicability (`{ctx.rel(Path(a['path']))}`, Meyer & Pebesma 2021): "
                     f"{100 * a['outside_share']:.1f} % of the scene outside; accuracy {_fmt(a['accuracy_inside'])} "
                     f"inside, {_fmt(a['accuracy_outside'])} outside")
    if len(lines) == 2:
        lines.append("This run's checkpoint carries no calibration or area of applicability (`dunemap calibrate`).")
    return "\n".join(lines)


def section_per_class(ctx: ReportContext) -> str:
    r = ctx.result
    names = list(r.map_metrics["per_class"])
    lines = ["## Per class on the held-out scene (IoU)", "", "| class | network | random forest | mapped area (km2) |",
             "| --- | ---: | ---: | ---: |"]
    absent = []
    for n in names:
        a, b = r.map_metrics["per_class"][n]["iou"], r.rf_map_metrics["per_class"][n]["iou"]
        if a is None and b is None and n not in r.areas_km2:
            continue
        label = n
        if r.map_metrics["per_class"][n]["support"] == 0:
            absent.append(n)
            label = f"{n} (absent from the truth)"
        lines.append(f"| {label} | {_fmt(a)} | {_fmt(b)} | {r.areas_km2.get(n, 0.0):.3f} |")
    if absent:
        present = [c["iou"] for c in r.map_metrics["per_class"].values() if c["support"] > 0 and c["iou"] is not None]
        lines += ["", (f"The scene's truth has no {', '.join(absent)}: every pixel a map shows as one of these is "
                       "false, and such a class scores IoU 0 in that map's mIoU (n/a where the map shows none). "
                       f"Over the {len(present)} classes the scene has, the network's mIoU is "
                       f"{_fmt(float(np.mean(present)) if present else None)}.")]
    return "\n".join(lines)


AREA_SAMPLE_POINTS = 600  # reference points sampled from the held-out map for the error-adjusted areas
AREA_MIN_PER_CLASS = 30


def section_areas(ctx: ReportContext) -> str:
    """Error-adjusted areas (Olofsson et al. 2014) from points sampled on the map and labelled from the truth."""
    from dunemap.accuracy.assess import assess_with_truth  # deferred: pyproj and shapely

    truth = ctx.result.out / "scene" / "heldout_labels.tif"
    comparison = assess_with_truth(ctx.class_map, truth, AREA_SAMPLE_POINTS, AREA_MIN_PER_CLASS, seed=ctx.config.seed)
    hit, counted = comparison.inside_count()
    e = comparison.assessment.estimate
    return "\n".join([
        "## Area per class: mapped, error-adjusted (95 %), truth", "",
        (f"{AREA_SAMPLE_POINTS} points sampled from the map by class (at least {AREA_MIN_PER_CLASS} per class), "
        "labelled from the scene's truth as an expert would label them, then the stratified estimator of "
        "Olofsson et al. (2014): the way to report areas from a map (`dunemap sample`, `dunemap accuracy`). "
        f"Overall accuracy {e.overall:.3f} ± {e.ci95(e.overall_se):.3f}; the truth area lies inside the 95 % interval "
        f"for {hit} of {counted} classes."), "",
        "```", comparison.table(), "```"])


def section_test_tiles(ctx: ReportContext) -> str:
    eval_dir = ctx.result.out / "eval_test"
    figures = [f"confusion matrix of the test split: ![confusion matrix]({ctx.rel(eval_dir / 'confusion_matrix.png')})"]
    if (eval_dir / "reliability.png").exists():
        figures.append(f"reliability of the confidence, before and after calibration: "
                       f"![reliability]({ctx.rel(eval_dir / 'reliability.png')})")
    return "\n".join(["## Test tiles, per class", "", "```", ctx.table, "```", "", *[f"- {f}" for f in figures]])


def section_reproduce(ctx: ReportContext) -> str:
    """What a fresh run reproduces, and what makes another machine's figures differ."""
    env = ctx.result.environment
    if not env:
        return ""
    return "\n".join([
        "## What a fresh run reproduces", "",
        (f"This run: {env['cpu']}, {env['threads']} torch thread(s), torch {env['torch']}, training in "
        f"{env['precision']} (`--precision {ctx.config.precision}`)."),
        ("Training on the CPU is deterministic: the same machine, torch version, thread count and precision give "
        "the same model and the same numbers. Another machine trains another model: `--precision auto` is bf16 on "
        "CPUs with AVX512-BF16 or AMX and fp32 elsewhere, and the CPU's instruction set and the thread count change "
        f"the order of floating-point sums, which {ctx.config.epochs} epochs amplify. Expect differences of the size of two "
        "training seeds' (docs/quality.md; BENCHMARKS.md, the demo), not better or worse models; `--precision "
        "fp32` removes the precision difference.")])


def section_configuration(ctx: ReportContext) -> str:
    cfg = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(ctx.config).items()}
    return "\n".join(["## Configuration", "", "```json", json.dumps(cfg, indent=2), "```"])


def section_times(ctx: ReportContext) -> str:
    return "\n".join(["## Wall time per stage (s)", "", *[f"- {stage}: {s:.1f}"
                                                           for stage, s in ctx.result.seconds.items()]])


REPORT_SECTIONS: list[Callable[[ReportContext], str]] = [
    section_title, section_headline, section_comparison, section_per_class, section_trust, section_areas,
    section_test_tiles, section_reproduce, section_configuration, section_times,
]
"""The report, in order; each section is a function of the :class:`ReportContext` returning markdown."""


def build_report(ctx: ReportContext, sections: list[Callable[[ReportContext], str]] | None = None) -> str:
    """``report.md``: the sections' markdown (empty ones left out), one blank line apart."""
    parts = (section(ctx).strip() for section in (sections or REPORT_SECTIONS))
    return "\n\n".join(p for p in parts if p) + "\n"
