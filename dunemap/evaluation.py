"""Evaluate a checkpoint on one split of a seed-layout dataset: metrics table, JSON and a confusion-matrix PNG.

Evaluation is exact by default: fp32 on every device, so a checkpoint gives the same metrics on any
machine. ``metrics.json`` records the precision, device, torch version and the checkpoint's SHA-256.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from dunemap import __version__
from dunemap.data.dataset import SeedLayoutDataset
from dunemap.data.manifest import read_manifest, scene_groups
from dunemap.io.atomic import atomic_path
from dunemap.io.outputs import check_outputs
from dunemap.metrics import SegmentationMetrics, format_table, metrics_from_matrix, plot_confusion_matrix
from dunemap.models.checkpoint import load_checkpoint
from dunemap.runtime import resolve_device, resolve_precision
from dunemap.training.loop import confusion_over
from dunemap.trust.applicability import Applicability
from dunemap.trust.report import trust_lines, trust_over

log = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    data_root: Path
    weights: Path
    split: str = "test"
    out_dir: Path | None = None  # default: ./eval_<weights folder>-<weights stem>_<split>/ (see default_out_dir)
    batch_size: int = 4
    text_embeddings: Path | None = None  # required only for a published MADS state_dict
    catalog: Path | None = None  # checked against the checkpoint's; a new class set for open-vocabulary models
    replace_text: bool = False  # let --text-embeddings replace the text a dunemap checkpoint carries
    regions: list[str] | None = None
    precision: str = "fp32"  # exact and machine-independent; "bf16" / "auto" only when asked
    device: str = "auto"
    overwrite: bool = False  # replace an existing metrics.json / confusion_matrix.png
    progress: bool = True


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
    """
    from dunemap.io.checksum import file_sha256

    out_dir = Path(config.out_dir) if config.out_dir else default_out_dir(config.weights, config.split)
    json_path, png_path = out_dir / "metrics.json", out_dir / "confusion_matrix.png"
    reliability_png = out_dir / "reliability.png"  # written when the checkpoint is calibrated
    check_outputs([json_path, png_path, reliability_png], [config.weights, config.text_embeddings, config.catalog],
                  overwrite=config.overwrite)
    loaded = load_checkpoint(config.weights, text_embeddings=config.text_embeddings, catalog=config.catalog,
                             replace_text=config.replace_text)
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    if precision != "fp32":
        log.warning("evaluating in %s: metrics may differ slightly from an exact (fp32) evaluation", precision)
    num_classes = len(loaded.class_names)
    dataset = SeedLayoutDataset(config.data_root, config.split, num_classes=num_classes,
                                in_channels=loaded.config.in_channels, regions=config.regions)
    model = loaded.model.to(device)
    # Tiles of scenes seen in training and of new scenes are scored apart (and summed for the split's score).
    present = set(dataset.names)
    groups = {g: kept for g, names in scene_groups(read_manifest(config.data_root) or [], config.split).items()
              if (kept := [n for n in names if n in present])}
    parts = [SeedLayoutDataset(config.data_root, config.split, num_classes=num_classes,
                               in_channels=loaded.config.in_channels, regions=config.regions, names=names)
             for names in groups.values()] if len(groups) > 1 else [dataset]
    matrices = [confusion_over(model, DataLoader(part, batch_size=config.batch_size, shuffle=False), num_classes,
                               device, precision, progress=config.progress, desc=config.split) for part in parts]
    matrix = sum(matrices)
    metrics = metrics_from_matrix(matrix)
    by_scene = {g: metrics_from_matrix(m) for g, m in zip(groups, matrices)} if len(groups) > 1 else {}
    trust = {}
    if loaded.calibration or loaded.applicability is not None:
        trust = trust_over(model, DataLoader(dataset, batch_size=config.batch_size, shuffle=False), num_classes,
                           loaded.temperature, _applicability(loaded), device, loaded.class_names, reliability_png)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "weights": str(config.weights), "checkpoint_sha256": file_sha256(config.weights),
        "data_root": str(config.data_root), "split": config.split, "n_samples": len(dataset),
        "precision": precision, "device": str(device), "torch_version": torch.__version__,
        "dunemap_version": __version__,
        "metrics": metrics.to_dict(loaded.class_names), "confusion_matrix": matrix.tolist(),
        "by_scene": {g: {"n_samples": len(parts[i]), **m.to_dict(loaded.class_names)}
                     for i, (g, m) in enumerate(by_scene.items())},
        **trust,
    }
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    png_path = plot_confusion_matrix(matrix, loaded.class_names, png_path)
    table = "\n".join([format_table(metrics, loaded.class_names), *(trust_lines(trust) if trust else [])])
    return EvalResult(metrics, matrix, loaded.class_names, table, json_path, png_path, precision, by_scene, trust)


def _applicability(loaded):
    if loaded.applicability is None or not hasattr(loaded.model, "forward_with_features"):
        return None
    return Applicability.from_dict(loaded.applicability, str(loaded.path))


__all__ = ["EvalConfig", "EvalResult", "evaluate"]
