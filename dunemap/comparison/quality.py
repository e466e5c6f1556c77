"""The quality benchmark's runner: data, one run per cell of the grid (:mod:`dunemap.comparison.spec`), stored rows.

Every (protocol, held-out region, method, seed) is one *run*; its result is a JSON row under
``OUT/runs/`` written atomically when the run is complete. A later call with the same settings reuses
the stored rows and runs only what is missing, then aggregates everything into tables, figures and a
``BENCHMARKS.md`` section (:mod:`dunemap.comparison.report`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from dunemap.comparison.pixel import PixelConfig, fit_pixel_classifier, pixel_confusion
from dunemap.comparison.report import read_markdown, write_quality_report
from dunemap.comparison.spec import (
    METHODS,
    SPLITS,
    QualityConfig,
    QualityPreset,
    Run,
    SynthSpec,
    digest,
    generator_fingerprint,
    plan_runs,
    run_settings,
)
from dunemap.data.dataset import SeedLayoutDataset
from dunemap.data.manifest import MANIFEST_NAME, read_manifest, scene_groups
from dunemap.data.seed_layout import IMG_DIR
from dunemap.errors import ConfigError, InputError
from dunemap.io.atomic import atomic_path
from dunemap.knowledge.catalog import load_catalog
from dunemap.metrics import metrics_from_matrix
from dunemap.models.checkpoint import load_checkpoint
from dunemap.runtime import ModelSpec, confusion_over, load_predictor
from dunemap.synth.dataset import SUMMARY_NAME, write_dataset
from dunemap.training import TrainConfig, train
from dunemap.training.loop import BEST, LAST

log = logging.getLogger(__name__)


@dataclass
class QualityResult:
    """What a benchmark call did and wrote."""

    rows: list[dict]  # one per run of the grid, in plan order
    ran: list[str]  # run ids computed by this call
    reused: list[str]  # run ids read back from OUT/runs
    data_root: Path
    files: dict[str, Path]  # report artefacts by name (tables, figures, summary JSON, BENCHMARKS.md)
    findings: list[str]  # the generated sentences of the report


# ----------------------------------------------------------------------------------------------- data


def synthesize(spec: SynthSpec, work_dir: Path, progress: bool = False) -> Path:
    """The synthetic dataset of ``spec`` under ``work_dir/data-<hash>``, generated once and reused afterwards.

    The generator stages everything and moves its summary into place last, so a dataset whose
    summary exists is complete; anything else there is regenerated.
    """
    root = work_dir / f"data-{digest([asdict(spec), generator_fingerprint()])}"
    if (root / SUMMARY_NAME).is_file():
        log.info("reusing synthetic dataset %s", root)
        return root
    log.info("generating synthetic dataset %s (%s)", root, spec)
    write_dataset(root, regions=list(spec.regions), scenes_per_region=spec.scenes_per_region,
                  scene_size=spec.scene_size, tile=spec.tile, seed=spec.seed, block_tiles=spec.block_tiles,
                  region_px=spec.region_px, split_by=spec.split_by, overwrite=True, progress=progress)
    return root


def dataset_regions(data_root: Path) -> dict[str, set[str]]:
    """Region -> the splits holding at least one of its tiles, from the dataset manifest."""
    records = read_manifest(data_root)
    if records is None:
        raise InputError(f"{data_root / MANIFEST_NAME}: not found; the quality benchmark needs the manifest's "
                         "region column")
    out: dict[str, set[str]] = {}
    for rec in records:
        if rec.region:
            out.setdefault(rec.region, set()).add(rec.split)
    if not out:
        raise InputError(f"{data_root / MANIFEST_NAME}: no tile has a region; expected a region per row")
    return out


def _existing_splits(data_root: Path) -> list[str]:
    return [s for s in SPLITS if (data_root / IMG_DIR / s).is_dir()]


def check_dataset(data_root: Path, num_classes: int, in_channels: int, progress: bool = False) -> None:
    """Read every sample of every split once (values included): a bad file fails before any training."""
    for split in _existing_splits(data_root):
        SeedLayoutDataset(data_root, split, num_classes=num_classes, in_channels=in_channels).check_all(progress)


# ----------------------------------------------------------------------------------------------- runs


@dataclass
class _Context:
    """What every run of one benchmark call shares."""

    config: QualityConfig
    preset: QualityPreset
    data_root: Path
    regions: dict[str, set[str]]
    groups: dict[str, list[str]]  # test tile names of the in-scene and new-scene protocols
    class_names: list[str]
    settings: dict
    precision: str


def _test_sets(ctx: _Context, run: Run) -> list[SeedLayoutDataset]:
    kw = {"num_classes": len(ctx.class_names), "in_channels": ctx.config.in_channels}
    if run.protocol == "loro":
        splits = [s for s in SPLITS if s in ctx.regions[run.holdout]]
        return [SeedLayoutDataset(ctx.data_root, s, regions=[run.holdout], **kw) for s in splits]
    return [SeedLayoutDataset(ctx.data_root, "test", names=ctx.groups[run.protocol], **kw)]


def _train_set(ctx: _Context, run: Run) -> SeedLayoutDataset:
    return SeedLayoutDataset(ctx.data_root, "train", num_classes=len(ctx.class_names),
                             in_channels=ctx.config.in_channels,
                             exclude_regions=[run.holdout] if run.protocol == "loro" else None)


def _run_pixel(ctx: _Context, run: Run) -> dict:
    preset = ctx.preset
    pcfg = PixelConfig(method=run.method, pixels_per_class=preset.pixels_per_class, n_estimators=preset.rf_trees,
                       n_neighbors=preset.knn_neighbors, seed=run.seed,
                       n_jobs=ctx.config.threads or 1)
    clf = fit_pixel_classifier(_train_set(ctx, run), pcfg, progress=ctx.config.progress)
    start = time.perf_counter()
    test_sets = _test_sets(ctx, run)
    matrix = pixel_confusion(clf, test_sets, len(ctx.class_names), progress=ctx.config.progress)
    return {"matrix": matrix, "train_seconds": clf.fit_seconds, "eval_seconds": time.perf_counter() - start,
            "test_splits": [d.split for d in test_sets], "detail": {"train_pixels": clf.sample_counts.tolist()}}


def _run_network(ctx: _Context, run: Run) -> dict:
    method, preset, cfg = METHODS[run.method], ctx.preset, ctx.config
    save_dir = _train_dir(ctx, run)
    model = method.architecture or preset.model
    tcfg = TrainConfig(
        data_root=ctx.data_root, save_dir=save_dir, model=model, in_channels=cfg.in_channels, epochs=preset.epochs,
        batch_size=preset.batch_size, lr=preset.lr, seed=run.seed, text=method.text, catalog=cfg.catalog,
        augment=preset.augment, ema_decay=preset.ema_decay, precision=ctx.precision, device=cfg.device,
        holdout_regions=[run.holdout] if run.protocol == "loro" else None,
        max_steps_per_epoch=preset.max_steps_per_epoch, resume=(save_dir / LAST).is_file(), check_data=False,
        progress=cfg.progress, model_overrides=dict(preset.unet_overrides) if method.architecture == "unet" else {},
    )
    start = time.perf_counter()
    finished = _finished_run(save_dir / LAST, preset.epochs)  # shared by protocols: trained once
    if finished is None:
        result = train(tcfg)
        best_epoch, best_val_miou = result.best_epoch, result.best_val_miou
    else:
        best_epoch, best_val_miou = finished
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    # scored as trained (unprepared) and exactly (fp32) unless the benchmark runs in bf16 by name
    spec = ModelSpec(save_dir / BEST, device=cfg.device, precision="bf16" if ctx.precision == "bf16" else "fp32")
    predictor = load_predictor(spec, prepare=False)
    k = len(ctx.class_names)
    matrix = np.zeros((k, k), dtype=np.int64)
    test_sets = _test_sets(ctx, run)
    for dataset in test_sets:
        loader = DataLoader(dataset, batch_size=preset.batch_size, shuffle=False)
        matrix += confusion_over(predictor, loader, k, progress=cfg.progress, desc=dataset.split)
    detail = {"model": model, "text": method.text, "best_epoch": best_epoch,
              "best_val_miou": best_val_miou,
              "parameters": int(sum(p.numel() for p in predictor.model.parameters()))}
    return {"matrix": matrix, "train_seconds": train_seconds, "eval_seconds": time.perf_counter() - start,
            "test_splits": [d.split for d in test_sets], "detail": detail}


def _finished_run(last: Path, epochs: int) -> tuple[int, float] | None:
    """(best epoch, best val mIoU) of a training run that already ran all ``epochs``; None otherwise."""
    if not last.is_file():
        return None
    state = load_checkpoint(last).train_state or {}
    if int(state.get("epoch", 0)) < epochs:
        return None
    return int(state["best_epoch"]), float(state["best_miou"])


def _train_dir(ctx: _Context, run: Run) -> Path:
    """Training folder of a network run, keyed by the settings so a changed budget never resumes a stale run."""
    return ctx.config.work_dir / "train" / digest(ctx.settings) / run.training_id


def _row(ctx: _Context, run: Run, out: dict) -> dict:
    metrics = metrics_from_matrix(out["matrix"])
    d = metrics.to_dict(ctx.class_names)
    return {
        "run_id": run.run_id, "protocol": run.protocol, "holdout": run.holdout, "method": run.method,
        "seed": run.seed, "settings_hash": digest(ctx.settings), "settings": ctx.settings,
        "metrics": {k: d[k] for k in ("oa", "miou", "kappa", "mf1")},
        "class_names": ctx.class_names,
        "per_class_iou": [d["per_class"][n]["iou"] for n in ctx.class_names],
        "confusion_matrix": d["confusion_matrix"], "n_test_pixels": d["n_pixels"],
        "test_splits": out["test_splits"], "train_seconds": round(out["train_seconds"], 3),
        "eval_seconds": round(out["eval_seconds"], 3), **out["detail"],
    }


def _read_row(path: Path, settings: dict) -> dict:
    try:
        row = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable benchmark row ({exc}); delete it to recompute the run") from None
    if row.get("settings_hash") != digest(settings):
        raise ConfigError(f"{path}: stored run used different settings than this call "
                          "(preset, data or precision changed); use a new --out or delete the stored rows")
    return row


def execute_run(ctx: _Context, run: Run, keep_model: bool = False) -> dict:
    """Compute one run and store its row as ``OUT/runs/<run_id>.json``; return the row.

    A network's checkpoints are deleted afterwards unless ``keep_model`` (a later run tests the same
    model) or ``--keep-checkpoints``.
    """
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None  # a busy shared CPU explains slow runs
    out = _run_pixel(ctx, run) if METHODS[run.method].kind == "pixel" else _run_network(ctx, run)
    row = _row(ctx, run, out)
    row["load_average"] = load
    path = ctx.config.out / "runs" / f"{run.run_id}.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(row, indent=1))
    if METHODS[run.method].kind == "network" and not (ctx.config.keep_checkpoints or keep_model):
        for pth in _train_dir(ctx, run).glob("*.pth"):
            pth.unlink()
    scores = " ".join(f"{k} {v:.4f}" for k, v in row["metrics"].items() if v is not None)
    log.info("%s: %s (train %.1f s, test %.1f s)", run.run_id, scores, row["train_seconds"], row["eval_seconds"])
    return row


def _holdouts(config: QualityConfig, preset: QualityPreset, regions: dict[str, set[str]]) -> list[str]:
    holdouts = list(config.holdout_regions) if config.holdout_regions else list(preset.holdout_regions)
    if config.data_root is not None and not config.holdout_regions:
        holdouts = sorted(regions)  # a user's dataset: every region of its manifest is held out once
    unknown = [h for h in holdouts if h not in regions]
    if unknown and "loro" in config.protocols:
        raise ConfigError(f"held-out region(s) {unknown} are not in the dataset; its regions: {sorted(regions)}")
    if "loro" in config.protocols and len(regions) < 2:
        raise ConfigError(f"leave-one-region-out needs at least 2 regions; the dataset has {sorted(regions)}")
    return holdouts


def run_quality(config: QualityConfig) -> QualityResult:
    """Run (or reuse) every run of the grid, then write tables, figures and the BENCHMARKS.md section."""
    started = time.perf_counter()
    if config.benchmarks_md is not None:
        read_markdown(config.benchmarks_md, "quality")  # a file that cannot take the section is refused first
    preset = config.resolved_preset
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    catalog = load_catalog(config.catalog)
    if config.data_root is not None:
        data_root = config.data_root
    else:
        if config.in_channels != 64:
            raise ConfigError(f"synthetic data has 64 bands; --bands {config.in_channels} needs --data-root")
        data_root = synthesize(preset.data, config.work_dir, progress=config.progress)
    regions = dataset_regions(data_root)
    holdouts = _holdouts(config, preset, regions)
    by_scene = scene_groups(read_manifest(data_root) or [])
    groups = {"in_region": by_scene["in_scene"], "new_scene": by_scene["new_scene"]}
    protocols = [p for p in config.protocols if p == "loro" or groups[p]]
    for p in sorted(set(config.protocols) - set(protocols)):
        log.warning("protocol %s skipped: the test split of %s holds no such tiles (%s)", p, data_root,
                    "split it with --split-by scene" if p == "new_scene" else "every test scene is new")
    settings = run_settings(config, preset, data_root)
    ctx = _Context(config, preset, data_root, regions, groups, list(catalog.names), settings,
                   config.precision or preset.precision)
    runs = plan_runs(protocols, holdouts, config.methods, config.seeds)

    rows, ran, reused = [], [], []
    todo = [r for r in runs if not (config.out / "runs" / f"{r.run_id}.json").is_file()]
    if todo:
        check_dataset(data_root, catalog.num_classes, config.in_channels, progress=config.progress)
    for run in runs:
        path = config.out / "runs" / f"{run.run_id}.json"
        if path.is_file():
            rows.append(_read_row(path, settings))
            reused.append(run.run_id)
            continue
        log.info("run %d/%d: %s", len(ran) + 1, len(todo), run.run_id)
        later = todo[todo.index(run) + 1:]
        rows.append(execute_run(ctx, run, keep_model=any(r.training_id == run.training_id for r in later)))
        ran.append(run.run_id)
    files, findings = write_quality_report(rows, config, preset, protocols, holdouts, catalog.names, data_root,
                                           ctx.precision, time.perf_counter() - started, len(ran))
    return QualityResult(rows, ran, reused, data_root, files, findings)


__all__ = [
    "QualityResult", "check_dataset", "dataset_regions", "execute_run", "run_quality", "synthesize",
]
