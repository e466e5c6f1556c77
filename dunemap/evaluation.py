"""Evaluate a checkpoint on one split of a seed-layout dataset: metrics table, JSON and a confusion-matrix PNG.

Evaluation is exact by default: fp32 on every device, so a checkpoint gives the same metrics on any
machine. ``metrics.json`` records the precision, device, torch version and the checkpoint's SHA-256.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from dunemap import __version__

from dunemap.data.dataset import SeedLayoutDataset
from dunemap.io.atomic import atomic_path
from dunemap.io.outputs import check_outputs
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


def default_out_dir(weights: str | Path, split: str) -> Path:
    """``./eval_<folder>-<stem>_<split>``: a new folder under the current directory, never the weights' folder."""
    weights = Path(weights).absolute()
    return Path.cwd() / f"eval_{weights.parent.name}-{weights.stem}_{split}"


def evaluate(config: EvalConfig) -> EvalResult:
    """Run the checkpoint over ``config.split`` and write ``metrics.json`` and ``confusion_matrix.png``."""
    from dunemap.knowledge.encoders import file_sha256

    out_dir = Path(config.out_dir) if config.out_dir else default_out_dir(config.weights, config.split)
    json_path, png_path = out_dir / "metrics.json", out_dir / "confusion_matrix.png"
    check_outputs([json_path, png_path], [config.weights, config.text_embeddings, config.catalog],
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
    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=False)
    model = loaded.model.to(device)
    matrix = confusion_over(model, loader, num_classes, device, precision,
                            progress=config.progress, desc=config.split)
    metrics = metrics_from_matrix(matrix)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "weights": str(config.weights), "checkpoint_sha256": file_sha256(config.weights),
        "data_root": str(config.data_root), "split": config.split, "n_samples": len(dataset),
        "precision": precision, "device": str(device), "torch_version": torch.__version__,
        "dunemap_version": __version__,
        "metrics": metrics.to_dict(loaded.class_names), "confusion_matrix": matrix.tolist(),
    }
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    png_path = plot_confusion_matrix(matrix, loaded.class_names, png_path)
    table = format_table(metrics, loaded.class_names)
    return EvalResult(metrics, matrix, loaded.class_names, table, json_path, png_path, precision)


__all__ = ["EvalConfig", "EvalResult", "evaluate"]
