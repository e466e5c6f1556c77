"""Evaluate a checkpoint on one split of a seed-layout dataset: metrics table, JSON and a confusion-matrix PNG.

Evaluation is exact by default: fp32 on every device, so a checkpoint gives the same metrics on any
machine. ``metrics.json`` records the precision, device, torch version and the checkpoint's SHA-256.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import KW_ONLY, InitVar, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from dunemap import __version__
from dunemap.data.dataset import SeedLayoutDataset
from dunemap.data.manifest import read_manifest, scene_groups
from dunemap.io.atomic import atomic_path
from dunemap.io.checksum import file_sha256
from dunemap.io.outputs import OutputIsInputError, claim_outputs
from dunemap.metrics import SegmentationMetrics, format_table, metrics_from_matrix
from dunemap.products.figures import plot_confusion_matrix
from dunemap.runtime import ModelSpec, Predictor, confusion_over, load_model, resolve_device
from dunemap.trust.report import trust_lines, trust_over

log = logging.getLogger(__name__)

RUN_MARKERS = ("best_model.pth", "last.pth", "config.yaml")  # files that make a folder a training run


EXACT_PRECISION = "fp32"  # evaluation's default: exact and machine-independent; bf16 / auto only when asked


@dataclass
class EvalConfig:
    """What ``dunemap evaluate`` runs: a :class:`~dunemap.runtime.ModelSpec` over one split of a dataset.

    ``model`` may be given as a weights path (then run in :data:`EXACT_PRECISION`), and the ModelSpec
    fields as keywords (``weights=``, ``precision=``, ... as the command line and ``dunemap.evaluate``
    give them): they are folded into ``model``, which is all that is kept.
    """

    data_root: Path
    model: ModelSpec | str | os.PathLike | None = None  # the checkpoint and how it runs (fp32 unless asked)
    split: str = "test"
    out_dir: Path | None = None  # default: ./eval_<weights folder>-<weights stem>_<split>/ (see default_out_dir)
    batch_size: int = 4
    regions: list[str] | None = None
    overwrite: bool = False  # replace an existing metrics.json / confusion_matrix.png
    progress: bool = True
    _: KW_ONLY
    # ModelSpec fields one by one, folded into ``model`` (None: not given); read them from ``model``
    weights: InitVar[str | os.PathLike | None] = None
    device: InitVar[str | None] = None
    precision: InitVar[str | None] = None
    text_embeddings: InitVar[str | os.PathLike | None] = None
    catalog: InitVar[str | os.PathLike | None] = None
    replace_text: InitVar[bool | None] = None

    def __post_init__(self, weights, device, precision, text_embeddings, catalog, replace_text) -> None:
        given = {"weights": weights, "device": device, "precision": precision, "text_embeddings": text_embeddings,
                 "catalog": catalog, "replace_text": replace_text}
        given = {k: v for k, v in given.items() if v is not None}
        model = self.model
        if model is None:
            model = given.pop("weights", None)
            if model is None:
                raise TypeError("EvalConfig needs the model: a ModelSpec or its weights")
        if not isinstance(model, ModelSpec):
            given.setdefault("precision", EXACT_PRECISION)
        self.model = ModelSpec.of(model, **given)


@dataclass
class EvalResult:
    metrics: SegmentationMetrics
    matrix: np.ndarray
    class_names: list[str]
    table: str
    json_path: Path
    png_path: Path
    precision: str = "fp32"
    by_scene: dict[str, SegmentationMetrics] = field(default_factory=dict)  # in_scene / new_scene, when both occur
    trust: dict = field(default_factory=dict)  # calibration and area-of-applicability figures (trust.report)


def default_out_dir(weights: str | Path, split: str) -> Path:
    """``./eval_<folder>-<stem>_<split>``: a new folder under the current directory, never the weights' folder."""
    weights = Path(weights).absolute()
    return Path.cwd() / f"eval_{weights.parent.name}-{weights.stem}_{split}"


def evaluate(config: EvalConfig) -> EvalResult:
    """Run the checkpoint over ``config.split`` and write ``metrics.json`` and ``confusion_matrix.png``.

    A calibrated checkpoint also gets its expected calibration error before and after calibration
    (and ``reliability.png``); one with an area of applicability gets its metrics inside and outside it.
    The model runs as trained (``prepare=False``: its layout and float32 weights), so fp32 metrics are exact.
    """
    spec = config.model
    out_dir = Path(config.out_dir) if config.out_dir else default_out_dir(spec.weights, config.split)
    if any((out_dir / name).exists() for name in RUN_MARKERS):
        raise OutputIsInputError(f"{out_dir}: is a training run folder (its metrics.json is the run's history); "
                                 "give evaluate another --out-dir")
    outputs = [out_dir / "metrics.json", out_dir / "confusion_matrix.png", out_dir / "reliability.png"]
    with claim_outputs(outputs, spec.files(), overwrite=config.overwrite):
        return _evaluate(config, *outputs)


def _evaluate(config: EvalConfig, json_path: Path, png_path: Path, reliability_png: Path) -> EvalResult:
    """:func:`evaluate` once its outputs are claimed; ``reliability_png`` is written for a calibrated checkpoint."""
    spec = config.model
    out_dir = json_path.parent
    loaded = load_model(spec)
    predictor = Predictor(loaded, resolve_device(spec.device), spec.precision, prepare=False)
    device, precision = predictor.device, predictor.precision
    if precision != "fp32":
        log.warning("evaluating in %s: metrics may differ slightly from an exact (fp32) evaluation", precision)
    num_classes, class_names = predictor.num_classes, predictor.class_names
    dataset = SeedLayoutDataset(config.data_root, config.split, num_classes=num_classes,
                                in_channels=predictor.in_channels, regions=config.regions)
    # Tiles of scenes seen in training and of new scenes are scored apart (and summed for the split's score).
    present = set(dataset.names)
    groups = {g: kept for g, names in scene_groups(read_manifest(config.data_root) or [], config.split).items()
              if (kept := [n for n in names if n in present])}
    parts = [SeedLayoutDataset(config.data_root, config.split, num_classes=num_classes,
                               in_channels=predictor.in_channels, regions=config.regions, names=names)
             for names in groups.values()] if len(groups) > 1 else [dataset]
    matrices = [confusion_over(predictor, DataLoader(part, batch_size=config.batch_size, shuffle=False),
                               progress=config.progress, desc=config.split) for part in parts]
    matrix = sum(matrices)
    metrics = metrics_from_matrix(matrix)
    by_scene = {g: metrics_from_matrix(m) for g, m in zip(groups, matrices)} if len(groups) > 1 else {}
    trust = {}
    if predictor.calibration or predictor.applicability is not None:
        exact = predictor if precision == "fp32" else Predictor(loaded, device, "fp32", prepare=False)
        trust = trust_over(exact, DataLoader(dataset, batch_size=config.batch_size, shuffle=False), reliability_png)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "weights": str(spec.weights), "checkpoint_sha256": file_sha256(spec.weights),
        "data_root": str(config.data_root), "split": config.split, "n_samples": len(dataset),
        "precision": precision, "device": str(device), "torch_version": torch.__version__,
        "dunemap_version": __version__,
        "metrics": metrics.to_dict(class_names), "confusion_matrix": matrix.tolist(),
        "by_scene": {g: {"n_samples": len(parts[i]), **m.to_dict(class_names)}
                     for i, (g, m) in enumerate(by_scene.items())},
        **trust,
    }
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    png_path = plot_confusion_matrix(matrix, class_names, png_path, split=config.split)
    table = "\n".join([format_table(metrics, class_names), *(trust_lines(trust) if trust else [])])
    return EvalResult(metrics, matrix, class_names, table, json_path, png_path, precision, by_scene, trust)


__all__ = ["EXACT_PRECISION", "EvalConfig", "EvalResult", "evaluate"]
