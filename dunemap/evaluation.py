"""Evaluate a checkpoint on one split of a seed-layout dataset: metrics table, JSON and a confusion-matrix PNG."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from dunemap.data.dataset import SeedLayoutDataset
from dunemap.data.manifest import read_manifest, scene_groups
from dunemap.io.atomic import atomic_path
from dunemap.metrics import SegmentationMetrics, format_table, metrics_from_matrix, plot_confusion_matrix
from dunemap.models.checkpoint import load_checkpoint, resolve_precision
from dunemap.training.distributed import resolve_device
from dunemap.training.loop import confusion_over

log = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    data_root: Path
    weights: Path
    split: str = "test"
    out_dir: Path | None = None  # default: beside the weights, eval_<split>/
    batch_size: int = 4
    text_embeddings: Path | None = None  # required only for a published MADS state_dict
    catalog: Path | None = None  # checked against the checkpoint's; a new class set for open-vocabulary models
    regions: list[str] | None = None
    precision: str = "auto"
    device: str = "auto"
    progress: bool = True


@dataclass
class EvalResult:
    metrics: SegmentationMetrics
    matrix: np.ndarray
    class_names: list[str]
    table: str
    json_path: Path
    png_path: Path
    by_scene: dict[str, SegmentationMetrics] = field(default_factory=dict)  # in_scene / new_scene, when both occur


def evaluate(config: EvalConfig) -> EvalResult:
    """Run the checkpoint over ``config.split`` and write ``metrics.json`` and ``confusion_matrix.png``."""
    from dunemap.knowledge.text import load_text_npy

    text = None
    if config.text_embeddings is not None:
        text = load_text_npy(config.text_embeddings)
    loaded = load_checkpoint(config.weights, text_embeddings=text, catalog=config.catalog)
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
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
    out_dir = Path(config.out_dir) if config.out_dir else Path(config.weights).parent / f"eval_{config.split}"
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "weights": str(config.weights), "data_root": str(config.data_root), "split": config.split,
        "n_samples": len(dataset), "precision": precision,
        "metrics": metrics.to_dict(loaded.class_names), "confusion_matrix": matrix.tolist(),
        "by_scene": {g: {"n_samples": len(parts[i]), **m.to_dict(loaded.class_names)}
                     for i, (g, m) in enumerate(by_scene.items())},
    }
    json_path = out_dir / "metrics.json"
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    png_path = plot_confusion_matrix(matrix, loaded.class_names, out_dir / "confusion_matrix.png")
    return EvalResult(metrics, matrix, loaded.class_names, format_table(metrics, loaded.class_names), json_path,
                      png_path, by_scene)


__all__ = ["EvalConfig", "EvalResult", "evaluate"]
