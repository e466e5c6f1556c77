"""Trust figures of a checkpoint on a labelled split: calibration error before and after, and the AOA's worth.

``evaluate`` calls :func:`trust_over` when the checkpoint carries a temperature or an area of
applicability. One fp32 pass over the split gives the reliability bins of the raw (T = 1) and the
calibrated probabilities, and confusion matrices of the pixels inside and outside the area of
applicability, so a user sees whether the confidence means what it says and whether the model is
worse where it extrapolates.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader

from dunemap.data.seed_layout import IGNORE_INDEX
from dunemap.metrics import ConfusionMatrix, metrics_from_matrix
from dunemap.runtime import Predictor, predict_over
from dunemap.trust.calibration import Reliability, ReliabilityAccumulator, plot_reliability


def _bins(rel: Reliability) -> list[dict]:
    return [{"from": float(rel.edges[i]), "to": float(rel.edges[i + 1]), "pixels": int(rel.count[i]),
             "mean_confidence": float(rel.confidence[i]), "accuracy": float(rel.accuracy[i])}
            for i in range(rel.count.size) if rel.count[i]]


def trust_over(predictor: Predictor, loader: DataLoader, reliability_png: Path | None = None) -> dict:
    """Calibration (ECE at T = 1 and at the predictor's temperature) and, where it has an area of
    applicability, metrics inside and outside it. Give an fp32 predictor: the figures are then exact."""
    num_classes, temperature = predictor.num_classes, predictor.temperature
    applicability = predictor.applicability if hasattr(predictor.model, "forward_with_features") else None
    acc = ReliabilityAccumulator({"uncalibrated": 1.0, "calibrated": temperature})
    inside_cm, outside_cm = ConfusionMatrix(num_classes, IGNORE_INDEX), ConfusionMatrix(num_classes, IGNORE_INDEX)
    for logits, y, di in predict_over(predictor, loader, dissimilarity=applicability is not None):
        if applicability is not None:
            pred = logits.argmax(1).cpu()
            inside = di <= applicability.threshold
            inside_cm.update(torch.where(inside, pred, IGNORE_INDEX), torch.where(inside, y, IGNORE_INDEX))
            outside_cm.update(torch.where(~inside, pred, IGNORE_INDEX), torch.where(~inside, y, IGNORE_INDEX))
        acc.update(logits.float().cpu(), y, IGNORE_INDEX)
    raw, cal = acc.result("uncalibrated"), acc.result("calibrated")
    report: dict = {"calibration": {"temperature": temperature, "ece_uncalibrated": raw.ece,
                                    "ece_calibrated": cal.ece, "reliability_calibrated": _bins(cal)}}
    if reliability_png is not None:
        plot_reliability({"uncalibrated": raw, f"calibrated (T = {temperature:.2f})": cal}, reliability_png)
        report["calibration"]["reliability_png"] = str(reliability_png)
    if applicability is not None:
        n_in, n_out = int(inside_cm.matrix.sum()), int(outside_cm.matrix.sum())
        report["applicability"] = {
            "threshold": applicability.threshold,
            "share_outside": n_out / max(n_in + n_out, 1),
            "inside": metrics_from_matrix(inside_cm.matrix).to_dict(predictor.class_names) if n_in else None,
            "outside": metrics_from_matrix(outside_cm.matrix).to_dict(predictor.class_names) if n_out else None,
        }
    return report


def trust_lines(report: dict) -> list[str]:
    """The printed summary of :func:`trust_over`'s report."""
    c = report["calibration"]
    lines = [f"calibration: T = {c['temperature']:.3f}, expected calibration error "
             f"{c['ece_uncalibrated']:.4f} uncalibrated -> {c['ece_calibrated']:.4f} calibrated"]
    a = report.get("applicability")
    if a is not None:
        miou = {k: (f"{a[k]['miou']:.4f}" if a[k] else "- (no labelled pixel)") for k in ("inside", "outside")}
        lines.append(f"area of applicability: {a['share_outside'] * 100:.1f} % of labelled pixels outside; "
                     f"mIoU inside {miou['inside']}, outside {miou['outside']}")
    return lines


__all__ = ["trust_lines", "trust_over"]
