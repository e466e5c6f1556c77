"""The quality benchmark: presets, the two protocols (leave-one-region-out, in-region), the methods, and the runner.

Every (protocol, held-out region, method, seed) is one *run*; its result is a JSON row under
``OUT/runs/`` written atomically when the run is complete. A later call with the same settings reuses
the stored rows and runs only what is missing, then aggregates everything into tables, figures and a
``BENCHMARKS.md`` section (:mod:`dunemap.benchmark.report`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from dunemap.data.dataset import SeedLayoutDataset
from dunemap.data.manifest import MANIFEST_NAME, read_manifest
from dunemap.data.seed_layout import IMG_DIR
from dunemap.errors import ConfigError, InputError
from dunemap.io.atomic import atomic_path
from dunemap.knowledge.catalog import load_catalog
from dunemap.metrics import metrics_from_matrix
from dunemap.registry import choose

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SynthSpec:
    """The synthetic five-region dataset a preset trains and tests on (``dunemap.synth.write_dataset``)."""

    regions: tuple[str, ...]
    scenes_per_region: int
    scene_size: int  # pixels per side of each scene
    tile: int  # pixels per side of each training tile
    block_tiles: int = 2  # side of the square blocks of tiles dealt whole to train/val/test
    seed: int = 0  # the data stays fixed across training seeds
    region_px: float = 320.0  # typical width of one landform region (dunemap.synth.SceneConfig.region_px), pixels


@dataclass(frozen=True)
class QualityPreset:
    """One budget, the same for every method: data, network size and schedule, pixel-baseline sample."""

    name: str
    description: str
    data: SynthSpec
    model: str  # SegFormer variant of segformer / fusion / fusion_random
    epochs: int
    batch_size: int
    lr: float
    max_steps_per_epoch: int | None
    holdout_regions: tuple[str, ...]  # the leave-one-region-out folds that are run
    unet_overrides: dict = field(default_factory=dict)  # U-Net size (UNetConfig fields)
    augment: str = "flip_rot90"  # training augmentation of every network (dunemap.data.transforms.AUGMENTATIONS)
    precision: str = "auto"
    pixels_per_class: int = 500
    rf_trees: int = 100
    knn_neighbors: int = 5


ALL_REGIONS = ("namib", "atacama", "mojave", "qaidam", "yilgarn")

PRESETS: dict[str, QualityPreset] = {
    "micro": QualityPreset(
        name="micro", description="seconds; only for the tests",
        data=SynthSpec(regions=("namib", "atacama", "mojave"), scenes_per_region=1, scene_size=96, tile=32,
                       block_tiles=1),
        model="mit_tiny", epochs=1, batch_size=4, lr=1e-3, max_steps_per_epoch=2, holdout_regions=("atacama",),
        unet_overrides={"base_width": 8, "depth": 2}, augment="flip_rot90_spectral", precision="fp32",
        pixels_per_class=40, rf_trees=10, knn_neighbors=3,
    ),
    # 200 steps of batch 8: with 100 the networks were still improving in their last epoch. A seed-0 probe
    # at this budget with the spectral shift (flip_rot90_spectral) scored lower than flips alone (SegFormer
    # with / without text: leave-one-region-out -1.6 / -0.8 mIoU points, in-region -1.8 / -3.7), so the
    # networks keep the published augmentation.
    "small": QualityPreset(
        name="small", description="<= 20 minutes on a shared 2-core CPU with --threads 1",
        data=SynthSpec(regions=ALL_REGIONS, scenes_per_region=2, scene_size=384, tile=64, block_tiles=2),
        model="mit_tiny", epochs=20, batch_size=8, lr=2e-3, max_steps_per_epoch=10,
        holdout_regions=("namib", "mojave", "yilgarn"), unet_overrides={"base_width": 16, "depth": 3},
        precision="fp32", pixels_per_class=500, rf_trees=100, knn_neighbors=5,
    ),
    "full": QualityPreset(
        name="full", description="for a GPU: MiT-B2, every region held out once, 50 epochs",
        data=SynthSpec(regions=ALL_REGIONS, scenes_per_region=4, scene_size=1024, tile=256),
        model="mit_b2", epochs=50, batch_size=8, lr=2e-4, max_steps_per_epoch=None, holdout_regions=ALL_REGIONS,
        unet_overrides={"base_width": 32, "depth": 4}, precision="auto", pixels_per_class=1000, rf_trees=100,
        knn_neighbors=5,
    ),
}


@dataclass(frozen=True)
class Method:
    """A competitor: a per-pixel sklearn baseline or a network trained by ``dunemap.training.train``."""

    name: str
    label: str  # for tables and figures
    kind: str  # "pixel" | "network"
    text: str = "none"  # text mode of a network (dunemap.knowledge.text.TEXT_MODES)
    architecture: str | None = None  # None: the preset's SegFormer


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("rf", "Random forest (per pixel)", "pixel"),
        Method("knn", "kNN (per pixel)", "pixel"),
        Method("segformer", "SegFormer, no text", "network", text="none"),
        Method("fusion", "SegFormer + catalog text", "network", text="catalog"),
        Method("fusion_random", "SegFormer + random text", "network", text="random"),
        Method("unet", "U-Net", "network", text="none", architecture="unet"),
    )
}

PROTOCOLS: dict[str, str] = {
    "loro": "leave-one-region-out: train and validate on the other regions, test on every tile of the held-out one",
    "in_region": "in-region: train/val/test tiles of all regions, split by spatial blocks",
}


@dataclass(frozen=True)
class Run:
    """One cell of the benchmark grid."""

    protocol: str  # a key of PROTOCOLS
    holdout: str | None  # the held-out region (loro) or None (in_region)
    method: str  # a key of METHODS
    seed: int

    @property
    def fold(self) -> str:
        return f"loro-{self.holdout}" if self.protocol == "loro" else self.protocol

    @property
    def run_id(self) -> str:
        return f"{self.fold}__{self.method}__seed{self.seed}"


def plan_runs(protocols: list[str], holdouts: list[str], methods: list[str], seeds: list[int]) -> list[Run]:
    """Every run of the grid, protocols first, then folds, methods and seeds (the order they are executed in)."""
    runs = []
    for protocol in protocols:
        folds = list(holdouts) if protocol == "loro" else [None]
        for holdout in folds:
            for method in methods:
                for seed in seeds:
                    runs.append(Run(protocol, holdout, method, seed))
    return runs


@dataclass
class QualityConfig:
    """Options of ``dunemap benchmark quality``."""

    out: Path  # results: runs/*.json, tables, figures
    preset: str = "small"  # a key of PRESETS
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    protocols: list[str] = field(default_factory=lambda: list(PROTOCOLS))
    holdout_regions: list[str] | None = None  # leave-one-region-out folds; None: the preset's
    work_dir: Path | None = None  # synthetic data and training runs; None: OUT/work
    data_root: Path | None = None  # an existing seed-layout dataset with manifest.csv instead of synthetic data
    catalog: Path | None = None  # class catalog of data_root (None: the packaged 10 dune classes)
    in_channels: int = 64
    benchmarks_md: Path | None = None  # write/replace the quality section of this file
    command: str = ""  # the command line recorded in the report
    device: str = "auto"
    precision: str | None = None  # None: the preset's
    threads: int | None = None  # torch intra-op threads; None: torch's default
    keep_checkpoints: bool = False  # keep every run's .pth files (large for the full preset)
    progress: bool = True

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.work_dir = Path(self.work_dir) if self.work_dir is not None else self.out / "work"
        for name in ("data_root", "catalog", "benchmarks_md"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, Path(value))
        choose(PRESETS, self.preset, "quality preset")
        for m in self.methods:
            choose(METHODS, m, "benchmark method")
        for p in self.protocols:
            choose(PROTOCOLS, p, "benchmark protocol")
        if not self.methods or not self.protocols or not self.seeds:
            raise ConfigError("benchmark needs at least one method, one protocol and one seed")
        for what, values in (("methods", self.methods), ("protocols", self.protocols), ("seeds", self.seeds)):
            if len(set(values)) != len(values):
                raise ConfigError(f"benchmark {what} {values} repeat an entry; give each once")
        if any(s < 0 for s in self.seeds):
            raise ConfigError(f"benchmark seeds {self.seeds} must be non-negative integers")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads={self.threads}; expected a positive integer")
        if self.precision is not None:
            choose(dict.fromkeys(("auto", "fp32", "bf16")), self.precision, "precision")

    @property
    def resolved_preset(self) -> QualityPreset:
        return PRESETS[self.preset]


@dataclass
class QualityResult:
    """What a benchmark call did and wrote."""

    rows: list[dict]  # one per run of the grid, in plan order
    ran: list[str]  # run ids computed by this call
    reused: list[str]  # run ids read back from OUT/runs
    data_root: Path
    files: dict[str, Path]  # report artefacts by name (tables, figures, summary JSON, BENCHMARKS.md)
    findings: list[str]  # the generated sentences of the report


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------- data


def generator_fingerprint() -> str:
    """A hash of the synthetic generator's source (``dunemap/synth/*.py``): a changed generator is new data.

    Datasets and stored results are keyed by it, so neither is reused across generator versions.
    """
    import dunemap.synth

    h = hashlib.sha256()
    for path in sorted(Path(dunemap.synth.__file__).parent.glob("*.py")):
        h.update(path.name.encode("utf-8") + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def synthesize(spec: SynthSpec, work_dir: Path, progress: bool = False) -> Path:
    """The synthetic dataset of ``spec`` under ``work_dir/data-<hash>``, generated once and reused afterwards.

    The generator stages everything and moves its summary into place last, so a dataset whose
    summary exists is complete; anything else there is regenerated.
    """
    from dunemap.synth.dataset import SUMMARY_NAME, write_dataset

    root = work_dir / f"data-{_digest([asdict(spec), generator_fingerprint()])}"
    if (root / SUMMARY_NAME).is_file():
        log.info("reusing synthetic dataset %s", root)
        return root
    log.info("generating synthetic dataset %s (%s)", root, spec)
    write_dataset(root, regions=list(spec.regions), scenes_per_region=spec.scenes_per_region,
                  scene_size=spec.scene_size, tile=spec.tile, seed=spec.seed, block_tiles=spec.block_tiles,
                  region_px=spec.region_px, overwrite=True, progress=progress)
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
    class_names: list[str]
    settings: dict
    precision: str


def run_settings(config: QualityConfig, preset: QualityPreset, data_root: Path) -> dict:
    """Everything besides the run's own key that determines its result; stored rows must match it to be reused."""
    p = asdict(preset)
    p.pop("holdout_regions")
    p.pop("description")
    p.pop("name")
    if config.data_root is not None:
        p.pop("data")
        p["data_root"] = str(Path(config.data_root).resolve())
    else:
        p["generator"] = generator_fingerprint()
    return {"preset": config.preset, "budget": p, "catalog": str(config.catalog) if config.catalog else None,
            "in_channels": config.in_channels, "precision": config.precision or preset.precision}


def _test_sets(ctx: _Context, run: Run) -> list[SeedLayoutDataset]:
    kw = {"num_classes": len(ctx.class_names), "in_channels": ctx.config.in_channels}
    if run.protocol == "loro":
        splits = [s for s in SPLITS if s in ctx.regions[run.holdout]]
        return [SeedLayoutDataset(ctx.data_root, s, regions=[run.holdout], **kw) for s in splits]
    return [SeedLayoutDataset(ctx.data_root, "test", **kw)]


def _train_set(ctx: _Context, run: Run) -> SeedLayoutDataset:
    return SeedLayoutDataset(ctx.data_root, "train", num_classes=len(ctx.class_names),
                             in_channels=ctx.config.in_channels,
                             exclude_regions=[run.holdout] if run.protocol == "loro" else None)


def _run_pixel(ctx: _Context, run: Run) -> dict:
    from dunemap.benchmark.pixel import (
        PixelConfig,
        fit_pixel_classifier,
        pixel_confusion,
    )

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
    from dunemap.models.checkpoint import load_checkpoint
    from dunemap.training import TrainConfig, train
    from dunemap.training.distributed import resolve_device
    from dunemap.training.loop import BEST, LAST, confusion_over

    method, preset, cfg = METHODS[run.method], ctx.preset, ctx.config
    save_dir = _train_dir(ctx, run)
    model = method.architecture or preset.model
    tcfg = TrainConfig(
        data_root=ctx.data_root, save_dir=save_dir, model=model, in_channels=cfg.in_channels, epochs=preset.epochs,
        batch_size=preset.batch_size, lr=preset.lr, seed=run.seed, text=method.text, catalog=cfg.catalog,
        augment=preset.augment, precision=ctx.precision, device=cfg.device,
        holdout_regions=[run.holdout] if run.protocol == "loro" else None,
        max_steps_per_epoch=preset.max_steps_per_epoch, resume=(save_dir / LAST).is_file(), check_data=False,
        progress=cfg.progress, model_overrides=dict(preset.unet_overrides) if method.architecture == "unet" else {},
    )
    start = time.perf_counter()
    result = train(tcfg)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    device = resolve_device(cfg.device)
    net = load_checkpoint(save_dir / BEST).model.to(device)
    k = len(ctx.class_names)
    matrix = np.zeros((k, k), dtype=np.int64)
    test_sets = _test_sets(ctx, run)
    for dataset in test_sets:
        loader = DataLoader(dataset, batch_size=preset.batch_size, shuffle=False)
        matrix += confusion_over(net, loader, k, device, ctx.precision, progress=cfg.progress, desc=dataset.split)
    detail = {"model": model, "text": method.text, "best_epoch": result.best_epoch,
              "best_val_miou": result.best_val_miou,
              "parameters": int(sum(p.numel() for p in net.parameters()))}
    return {"matrix": matrix, "train_seconds": train_seconds, "eval_seconds": time.perf_counter() - start,
            "test_splits": [d.split for d in test_sets], "detail": detail}


def _train_dir(ctx: _Context, run: Run) -> Path:
    """Training folder of a network run, keyed by the settings so a changed budget never resumes a stale run."""
    return ctx.config.work_dir / "train" / _digest(ctx.settings) / run.run_id


def _row(ctx: _Context, run: Run, out: dict) -> dict:
    metrics = metrics_from_matrix(out["matrix"])
    d = metrics.to_dict(ctx.class_names)
    return {
        "run_id": run.run_id, "protocol": run.protocol, "holdout": run.holdout, "method": run.method,
        "seed": run.seed, "settings_hash": _digest(ctx.settings), "settings": ctx.settings,
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
    if row.get("settings_hash") != _digest(settings):
        raise ConfigError(f"{path}: stored run used different settings than this call "
                          "(preset, data or precision changed); use a new --out or delete the stored rows")
    return row


def execute_run(ctx: _Context, run: Run) -> dict:
    """Compute one run and store its row as ``OUT/runs/<run_id>.json``; return the row."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None  # a busy shared CPU explains slow runs
    out = _run_pixel(ctx, run) if METHODS[run.method].kind == "pixel" else _run_network(ctx, run)
    row = _row(ctx, run, out)
    row["load_average"] = load
    path = ctx.config.out / "runs" / f"{run.run_id}.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(row, indent=1))
    if METHODS[run.method].kind == "network" and not ctx.config.keep_checkpoints:
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
    from dunemap.benchmark.report import write_quality_report

    started = time.perf_counter()
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
    settings = run_settings(config, preset, data_root)
    ctx = _Context(config, preset, data_root, regions, list(catalog.names), settings,
                   config.precision or preset.precision)
    runs = plan_runs(config.protocols, holdouts, config.methods, config.seeds)

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
        rows.append(execute_run(ctx, run))
        ran.append(run.run_id)
    files, findings = write_quality_report(rows, config, preset, holdouts, catalog.names, data_root, ctx.precision,
                                           time.perf_counter() - started, len(ran))
    return QualityResult(rows, ran, reused, data_root, files, findings)


__all__ = [
    "METHODS", "PRESETS", "PROTOCOLS", "Method", "QualityConfig", "QualityPreset", "QualityResult", "Run",
    "SynthSpec", "dataset_regions", "execute_run", "generator_fingerprint", "plan_runs", "run_quality",
    "run_settings", "synthesize",
]
