"""Statistics of benchmark rows over seeds: mean ± sample std, per-seed paired differences, aggregates."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

METRICS: dict[str, str] = {"oa": "OA", "miou": "mIoU", "kappa": "Kappa", "mf1": "mF1"}
MIN_EFFECT = 1.0  # mIoU points: a smaller mean paired difference is not called an effect


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (ddof 1; NaN for a single value) of n values."""

    mean: float
    std: float
    n: int

    def to_dict(self) -> dict:
        return {"mean": None if math.isnan(self.mean) else self.mean,
                "std": None if math.isnan(self.std) else self.std, "n": self.n}


def stat(values: Iterable[float | None]) -> Stat:
    """Stat of the finite values (None and NaN are dropped)."""
    v = np.array([float(x) for x in values if x is not None and not math.isnan(float(x))], dtype=np.float64)
    if v.size == 0:
        return Stat(math.nan, math.nan, 0)
    return Stat(float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan, int(v.size))


def fmt_stat(s: Stat, scale: float = 100.0, digits: int = 1) -> str:
    """``"63.2 ± 1.4"`` (scaled); ``"-"`` without values; no ± part for a single value."""
    if s.n == 0:
        return "-"
    mean = round(s.mean * scale, digits) + 0.0  # + 0.0 turns a rounded -0.0 into 0.0
    if math.isnan(s.std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {s.std * scale:.{digits}f}"


def seed_scores(rows: Sequence[dict], protocol: str, method: str, metric: str = "miou") -> dict[int, float]:
    """Seed -> the metric of (protocol, method), averaged over the held-out regions for leave-one-region-out."""
    by_seed: dict[int, list[float]] = {}
    for r in rows:
        value = r["metrics"].get(metric)
        if r["protocol"] == protocol and r["method"] == method and value is not None:
            by_seed.setdefault(int(r["seed"]), []).append(float(value))
    return {s: float(np.mean(v)) for s, v in sorted(by_seed.items())}


def method_stat(rows: Sequence[dict], protocol: str, method: str, metric: str) -> Stat:
    """Mean ± std over seeds of the per-seed scores."""
    return stat(seed_scores(rows, protocol, method, metric).values())


@dataclass(frozen=True)
class Paired:
    """``a - b`` per seed (mIoU points), over the seeds both have."""

    diff: Stat
    wins: int  # seeds where a > b

    @property
    def n(self) -> int:
        return self.diff.n

    def verdict(self) -> str:
        """``gain``, ``loss`` or ``none``: an effect needs >= 2 seeds all of one sign and |mean| >= MIN_EFFECT."""
        if self.n < 2:
            return "none"
        if self.wins == self.n and self.diff.mean >= MIN_EFFECT:
            return "gain"
        if self.wins == 0 and self.diff.mean <= -MIN_EFFECT:
            return "loss"
        return "none"

    def text(self) -> str:
        spread = "" if math.isnan(self.diff.std) else f" ± {self.diff.std:.1f}"
        return f"{self.diff.mean:+.1f}{spread} points ({self.wins}/{self.n} seeds better)"


def paired(rows: Sequence[dict], protocol: str, a: str, b: str, metric: str = "miou") -> Paired | None:
    """Paired per-seed difference ``a - b`` of ``metric`` ×100; None when no seed has both."""
    sa, sb = seed_scores(rows, protocol, a, metric), seed_scores(rows, protocol, b, metric)
    common = sorted(set(sa) & set(sb))
    if not common:
        return None
    d = [100.0 * (sa[s] - sb[s]) for s in common]
    return Paired(stat(d), sum(x > 0 for x in d))


def quality_summary(rows: Sequence[dict], protocols: Sequence[str], methods: Sequence[str],
                    holdouts: Sequence[str], num_classes: int) -> dict:
    """Aggregates for JSON: per protocol and method, each metric's Stat, per-class IoU and per-fold mIoU."""
    out: dict = {}
    for protocol in protocols:
        out[protocol] = {}
        for m in methods:
            sel = [r for r in rows if r["protocol"] == protocol and r["method"] == m]
            per_class = [stat(r["per_class_iou"][k] for r in sel) for k in range(num_classes)]
            entry = {key: method_stat(rows, protocol, m, key).to_dict() for key in METRICS}
            entry["per_class_iou"] = [s.to_dict() for s in per_class]
            if protocol == "loro":
                entry["folds"] = {h: stat(r["metrics"]["miou"] for r in sel if r["holdout"] == h).to_dict()
                                  for h in holdouts}
            out[protocol][m] = entry
    return out
