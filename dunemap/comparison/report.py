"""Benchmark reports: markdown tables, figures, generated findings and BENCHMARKS.md sections.

The numbers come from :mod:`dunemap.comparison.stats`, the names of methods and protocols from
:mod:`dunemap.comparison.spec`; this module only renders them.

A section of ``BENCHMARKS.md`` lies between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``;
:func:`write_section` replaces only that span, so the quality and speed sections (and anything a
person wrote around them) are kept when one of them is refreshed.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dunemap.comparison.spec import METHODS, PROTOCOL_LABELS, QualityConfig, QualityPreset, generator_fingerprint
from dunemap.comparison.stats import (METRICS, MIN_EFFECT, fmt_stat, method_stat, paired, quality_summary,
                                      seed_scores, stat)
from dunemap.data.manifest import read_manifest
from dunemap.errors import InputError
from dunemap.io.atomic import atomic_path

HOPED_GAP = 15.0  # mIoU points the issue hopes the best network gains over the pixel random forest
NETWORKS = tuple(name for name, m in METHODS.items() if m.kind == "network")


# ------------------------------------------------------------------------------------------ machine


def machine_description(device: str = "cpu") -> dict[str, str]:
    """CPU model, logical cores, torch version and threads, and the GPU when ``device`` is CUDA."""
    import torch

    from dunemap.runtime import bf16_supported  # deferred: torch, needed only for the machine section

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):  # no /proc on this OS: keep platform's answer
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    info = {
        "cpu": cpu, "logical_cores": str(os.cpu_count() or 1), "usable_cores": str(usable),
        "cpu_bf16_native": "yes" if bf16_supported(torch.device("cpu")) else "no",
        "torch": torch.__version__, "torch_threads": str(torch.get_num_threads()),
        "python": platform.python_version(), "os": f"{platform.system()} {platform.release()}",
    }
    if str(device).startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    return info


def format_machine(info: dict[str, str]) -> str:
    """One line describing the machine for a report."""
    text = (f"{info['cpu']}, {info['logical_cores']} logical cores ({info['usable_cores']} usable), "
            f"native CPU bf16: {info['cpu_bf16_native']}; torch {info['torch']} with {info['torch_threads']} "
            f"thread(s); Python {info['python']} on {info['os']}")
    if "gpu" in info:
        text += f"; GPU {info['gpu']}"
    return text


# ------------------------------------------------------------------------------------------ sections


def _markers(name: str) -> tuple[str, str]:
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", name):
        raise InputError(f"section name {name!r}: expected lowercase letters, digits, '-' or '_'")
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def replace_section(text: str, name: str, body: str, source: str = "<text>") -> str:
    """``text`` with the span between ``name``'s markers replaced by ``body`` (appended when there are none)."""
    begin, end = _markers(name)
    n_begin, n_end = text.count(begin), text.count(end)
    block = f"{begin}\n{body.strip()}\n{end}"
    if n_begin == 0 and n_end == 0:
        return text.rstrip("\n") + ("\n\n" if text.strip() else "") + block + "\n"
    i, j = text.find(begin), text.find(end)
    if n_begin != 1 or n_end != 1 or j < i:
        raise InputError(f"{source}: expected one {begin} followed by one {end}; found {n_begin} begin and "
                         f"{n_end} end marker(s) — fix the file by hand")
    return text[:i] + block + text[j + len(end):]


def read_markdown(path: str | os.PathLike, name: str) -> str:
    """The text of markdown file ``path`` (a title when missing), checked to take section ``name`` (before any work)."""
    try:
        text = Path(path).read_bytes().decode("utf-8") if Path(path).exists() else "# Benchmarks\n"
    except (OSError, UnicodeDecodeError) as exc:  # a folder, no permission, a binary file
        raise InputError(f"{path}: not readable as UTF-8 markdown text ({' '.join(str(exc).split())})") from None
    replace_section(text, name, "", str(path))  # its markers must be usable
    return text


def write_section(path: str | os.PathLike, name: str, body: str) -> Path:
    """Write ``body`` as section ``name`` of the markdown file ``path`` (created with a title when missing)."""
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(replace_section(read_markdown(path, name), name, body, str(path)))
    return Path(path)


# ------------------------------------------------------------------------------------------ statistics


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str | None = None) -> str:
    """A GitHub markdown table; ``align`` is one character per column (``l`` or ``r``), default left then right."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ quality numbers


def rf_gap_finding(rows: Sequence[dict], protocol: str = "loro") -> str | None:
    """The best network of ``protocol`` against the pixel random forest, in mIoU points (paired over seeds)."""
    nets = {m: method_stat(rows, protocol, m, "miou") for m in NETWORKS}
    nets = {m: s for m, s in nets.items() if s.n}
    if not nets:
        return None
    best = max(nets, key=lambda m: nets[m].mean)
    p = paired(rows, protocol, best, "rf")
    if p is None:
        return None
    r = method_stat(rows, protocol, "rf", "miou")
    met = "reaches" if p.diff.mean >= HOPED_GAP else "falls short of"
    return (f"{PROTOCOL_LABELS[protocol]}: the best network, {METHODS[best].label}, scores {fmt_stat(nets[best])} mIoU "
            f"against {fmt_stat(r)} for the per-pixel random forest, a difference of {p.text()}; this {met} the "
            f"hoped-for {HOPED_GAP:.0f} points.")


def text_finding(rows: Sequence[dict], protocol: str, label: str, data: str = "this synthetic data") -> str | None:
    """Plain statement of whether catalog text helps under ``protocol``, from paired per-seed differences.

    ``data`` names what the runs were trained and tested on (the sentence must follow the data).
    """
    comparisons = [(name, paired(rows, protocol, "fusion", other))
                   for name, other in (("random text", "fusion_random"), ("no text", "segformer"))]
    comparisons = [(name, p) for name, p in comparisons if p is not None]
    if not comparisons:
        return None
    detail = "; ".join(f"vs {name} {p.text()}" for name, p in comparisons)
    n = min(p.n for _, p in comparisons)
    if n < 2:
        return f"{label}: only {n} seed, too few to judge the effect of the catalog text (fusion {detail})."
    verdicts = {p.verdict() for _, p in comparisons}
    lower = [name for name, p in comparisons if p.verdict() == "loss"]
    if verdicts == {"gain"}:
        head = "the catalog text helps"
    elif lower and "gain" not in verdicts:
        head = f"the catalog text does not help on {data}; it scores lower than {' and '.join(lower)}"
    else:
        head = f"the catalog text does not help on {data}"
    return (f"{label}: {head} (mIoU of fusion {detail}; an effect needs every seed on one side and at least "
            f"{MIN_EFFECT:.0f} point on average).")


PROTOCOL_DETAIL = {
    "in_region": "test tiles cut from blocks of the scenes the networks trained on",
    "new_scene": "test tiles of whole scenes no method saw in training, same regions (the same trained "
                 "models as in-scene)",
}


def gap_finding(rows: Sequence[dict], protocols: Sequence[str]) -> str | None:
    """In-scene against new-scene mIoU of every method: how much of the in-scene score is memory of the scene."""
    if not {"in_region", "new_scene"} <= set(protocols):
        return None
    parts = []
    for m in METHODS:
        a, b = method_stat(rows, "in_region", m, "miou"), method_stat(rows, "new_scene", m, "miou")
        if a.n and b.n:
            parts.append(f"{METHODS[m].label} {fmt_stat(a)} → {fmt_stat(b)}")
    if not parts:
        return None
    return "In-scene → new-scene mIoU (the same models): " + "; ".join(parts) + "."


def best_finding(rows: Sequence[dict], protocol: str, label: str, methods: Sequence[str]) -> str | None:
    stats = {m: method_stat(rows, protocol, m, "miou") for m in methods}
    stats = {m: s for m, s in stats.items() if s.n}
    if not stats:
        return None
    best = max(stats, key=lambda m: stats[m].mean)
    return f"{label}: the best mIoU is {METHODS[best].label} with {fmt_stat(stats[best])}."


def _protocol_tables(rows: Sequence[dict], protocol: str, methods: Sequence[str], holdouts: Sequence[str]) -> str:
    body = []
    for m in methods:
        n = len(seed_scores(rows, protocol, m, "miou"))
        body.append([METHODS[m].label, *(fmt_stat(method_stat(rows, protocol, m, k)) for k in METRICS), str(n)])
    text = markdown_table(["Method", *METRICS.values(), "seeds"], body)
    if protocol == "loro" and len(holdouts) > 1:
        fold_rows = []
        for m in methods:
            sel = [r for r in rows if r["protocol"] == protocol and r["method"] == m]
            fold_rows.append([METHODS[m].label, *(fmt_stat(stat(r["metrics"]["miou"] for r in sel if r["holdout"] == h))
                                                  for h in holdouts)])
        text += "\n\nmIoU per held-out region:\n\n" + markdown_table(["Method", *holdouts], fold_rows)
    return text


# ------------------------------------------------------------------------------------------ figures


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path


def plot_metric_bars(path: Path, rows: Sequence[dict], metric: str, methods: Sequence[str],
                     protocols: Sequence[str], protocol_labels: dict[str, str]) -> Path:
    """Grouped bars of one metric (×100): one group per method, one bar per protocol, error bars = std over seeds."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.3 * len(methods) + 2.0, 3.6))
    ax = fig.add_subplot()
    width = 0.8 / len(protocols)
    x = np.arange(len(methods))
    for i, protocol in enumerate(protocols):
        stats = [method_stat(rows, protocol, m, metric) for m in methods]
        means = [0.0 if s.n == 0 else 100 * s.mean for s in stats]
        errs = [0.0 if math.isnan(s.std) else 100 * s.std for s in stats]
        ax.bar(x + (i - (len(protocols) - 1) / 2) * width, means, width, yerr=errs, capsize=3,
               label=protocol_labels[protocol])
    ax.set_xticks(x)
    ax.set_xticklabels([METHODS[m].label for m in methods], rotation=25, ha="right", fontsize=8)
    ax.set_ylabel(f"{METRICS[metric]} (×100)")
    ax.set_title(f"{METRICS[metric]}: mean ± std over seeds")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_class_heatmap(path: Path, rows: Sequence[dict], protocol: str, methods: Sequence[str],
                       class_names: Sequence[str], title: str) -> Path:
    """Methods x classes heatmap of IoU (mean over seeds and held-out regions); blank where a class never occurs."""
    import matplotlib
    from matplotlib.figure import Figure

    grid = np.full((len(methods), len(class_names)), np.nan)
    for i, m in enumerate(methods):
        sel = [r for r in rows if r["protocol"] == protocol and r["method"] == m]
        for k in range(len(class_names)):
            s = stat(r["per_class_iou"][k] for r in sel)
            if s.n:
                grid[i, k] = s.mean
    fig = Figure(figsize=(0.75 * len(class_names) + 2.5, 0.45 * len(methods) + 1.8))
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#dddddd")
    image = ax.imshow(np.ma.masked_invalid(grid), vmin=0.0, vmax=1.0, cmap=cmap, aspect="auto")
    for i in range(grid.shape[0]):
        for k in range(grid.shape[1]):
            if not math.isnan(grid[i, k]):
                ax.text(k, i, f"{100 * grid[i, k]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if grid[i, k] < 0.6 else "black")
    ax.set_xticks(range(len(class_names)))
    ax.set_xticklabels(class_names, rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(len(methods)))
    ax.set_yticklabels([METHODS[m].label for m in methods], fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="IoU")
    return _save(fig, path)


# ------------------------------------------------------------------------------------------ quality report


def _tile_counts(data_root: Path) -> tuple[str, int]:
    """``"248 train, 56 val, 56 test tiles"`` and the number of regions, from the dataset manifest."""
    records = read_manifest(data_root) or []
    counts: dict[str, int] = {}
    for r in records:
        counts[r.split] = counts.get(r.split, 0) + 1
    text = ", ".join(f"{n} {s}" for s, n in counts.items()) + " tiles" if counts else "no manifest"
    return text, len({r.region for r in records if r.region})


def _load_text(rows: Sequence[dict]) -> str:
    loads = [float(r["load_average"]) for r in rows if r.get("load_average") is not None]
    if not loads:
        return ""
    return (f" The 1-minute load average at the start of the runs ranged from {min(loads):.1f} to {max(loads):.1f}"
            f" (a load above the core count means other jobs shared the CPU and times are longer than on an idle"
            f" machine).")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60.0:.1f} min"


def _budget_text(config: QualityConfig, preset: QualityPreset, data_root: Path, precision: str) -> str:
    d = preset.data
    if config.data_root is None:
        data = (f"synthetic (`dunemap.synth` source {generator_fingerprint()}), {len(d.regions)} regions "
                f"({', '.join(d.regions)}), {d.scenes_per_region} scene(s) per region of {d.scene_size}x{d.scene_size}"
                f" px, {d.tile} px tiles, landform regions about {d.region_px:g} px across, split by {d.split_by}, "
                f"data seed {d.seed}")
    else:
        data = f"`{config.data_root}`"
    unet = ", ".join(f"{k} {v}" for k, v in preset.unet_overrides.items()) or "defaults"
    steps = f", at most {preset.max_steps_per_epoch} steps per epoch" if preset.max_steps_per_epoch else ""
    return (f"- Preset `{preset.name}` ({preset.description}).\n"
            f"- Data: {data}; {_tile_counts(data_root)[0]}.\n"
            f"- Networks (same budget for all): SegFormer `{preset.model}` (no text, catalog text, random text) and "
            f"a U-Net ({unet}); {preset.epochs} epoch(s), batch {preset.batch_size}{steps}, AdamW lr {preset.lr:g} "
            f"with linear decay, precision {precision}; the checkpoint of the best validation mIoU is tested.\n"
            f"- Pixel baselines: {preset.pixels_per_class} labelled pixels per class drawn from the same training "
            f"tiles; random forest of {preset.rf_trees} trees, kNN with k = {preset.knn_neighbors}.")


def write_quality_report(rows: Sequence[dict], config: QualityConfig, preset: QualityPreset,
                         protocols: Sequence[str], holdouts: Sequence[str], class_names: Sequence[str],
                         data_root: Path, precision: str, elapsed_s: float,
                         n_ran: int) -> tuple[dict[str, Path], list[str]]:
    """Write the summary JSON, tables, figures and (if configured) the BENCHMARKS.md section; return files, findings.

    ``protocols`` are the ones that ran (a protocol without test tiles in the dataset is left out).
    """
    import json

    out = config.out
    methods, protocols = list(config.methods), list(protocols)
    labels = PROTOCOL_LABELS
    data = "this synthetic data" if config.data_root is None else f"the dataset {config.data_root}"
    files: dict[str, Path] = {}

    summary = quality_summary(rows, protocols, methods, holdouts, len(class_names))
    with atomic_path(out / "quality_summary.json") as tmp:
        tmp.write_text(json.dumps({"class_names": list(class_names), "holdouts": list(holdouts),
                                   "seeds": list(config.seeds), "summary": summary}, indent=1))
    files["summary"] = out / "quality_summary.json"
    for metric in METRICS:
        files[f"bars_{metric}"] = plot_metric_bars(out / f"quality_{metric}.png", rows, metric, methods, protocols,
                                                   labels)
    for protocol in protocols:
        files[f"heatmap_{protocol}"] = plot_class_heatmap(
            out / f"quality_per_class_iou_{protocol}.png", rows, protocol, methods, class_names,
            f"{labels[protocol]}: per-class IoU (×100), mean over seeds" + (" and held-out regions"
                                                                            if protocol == "loro" else ""))

    findings = [f for f in (
        *(rf_gap_finding(rows, p) for p in protocols if p != "in_region"),
        gap_finding(rows, protocols),
        *(text_finding(rows, p, labels[p], data) for p in protocols),
        *(best_finding(rows, p, labels[p], methods) for p in protocols),
    ) if f]

    def body(link_base: Path) -> str:
        def link(path: Path) -> str:
            return Path(os.path.relpath(path.resolve(), link_base.resolve())).as_posix()

        seeds = ",".join(str(s) for s in config.seeds)
        n_regions = _tile_counts(data_root)[1]
        run_seconds = sum(float(r["train_seconds"]) + float(r["eval_seconds"]) for r in rows)
        parts = [
            "## Quality: does the text help, and does it beat the per-pixel random forest?",
            "",
            f"Command: `{config.command or 'dunemap benchmark quality'}`",
            "",
            f"Machine: {format_machine(machine_description(config.device))}.",
            "",
            _budget_text(config, preset, data_root, precision),
            "- Protocols: " + "; ".join(
                f"({chr(97 + i)}) {labels[p]}" + (f" over held-out region(s) {', '.join(holdouts)} ({len(holdouts)} "
                                                   f"of the {n_regions} regions), tested on all their tiles"
                                                   if p == "loro" else f": {PROTOCOL_DETAIL[p]}")
                for i, p in enumerate(protocols)) + ".",
            f"- Seeds {seeds}; scores ×100, mean ± sample std over seeds; for leave-one-region-out each seed's score "
            f"is the mean over the held-out regions. Compute of all runs {_duration(run_seconds)}; this call "
            f"computed {n_ran} of {len(rows)} run(s) and took {_duration(elapsed_s)}." + _load_text(rows),
            "",
            "### Findings",
            "",
            *(f"- {f}" for f in findings),
        ]
        for p in protocols:
            parts += ["", f"### {labels[p]}", "", _protocol_tables(rows, p, methods, holdouts), "",
                      f"![{labels[p]} per-class IoU]({link(files[f'heatmap_{p}'])})"]
        parts += ["", "### Figures", "",
                  " ".join(f"![{METRICS[m]}]({link(files[f'bars_{m}'])})" for m in METRICS), "",
                  f"Per-run rows: `{link(out / 'runs')}/`; aggregates: `{link(files['summary'])}`."]
        return "\n".join(parts) + "\n"

    with atomic_path(out / "quality.md") as tmp:
        tmp.write_text(body(out))
    files["markdown"] = out / "quality.md"
    if config.benchmarks_md is not None:
        files["benchmarks_md"] = write_section(config.benchmarks_md, "quality", body(config.benchmarks_md.parent))
    return files, findings


# ------------------------------------------------------------------------------------------ speed report


def speed_tables(rows: Sequence[dict]) -> str:
    """Markdown: one row per (model, size), samples/s of forward and training in fp32 and bf16."""
    cases = sorted({(r["model"], r["size"]) for r in rows}, key=lambda c: ([r["model"] for r in rows].index(c[0]), c[1]))
    columns = [(mode, prec) for mode in ("forward", "train") for prec in ("fp32", "bf16")
               if any(r["mode"] == mode and r["precision"] == prec for r in rows)]

    def cell(model: str, size: int, mode: str, prec: str) -> str:
        hits = [r for r in rows if (r["model"], r["size"], r["mode"], r["precision"]) == (model, size, mode, prec)]
        if not hits:
            return "-"
        r = hits[0]
        return r["error"] if r.get("error") else f"{r['samples_per_s']:.2f}"

    body = [[f"`{m}`", f"{s}x{s}", *(cell(m, s, mode, prec) for mode, prec in columns)] for m, s in cases]
    return markdown_table(["Model", "Input", *(f"{mode} {prec}" for mode, prec in columns)], body)


def speed_section(rows: Sequence[dict], command: str, machine: dict[str, str], notes: Sequence[str]) -> str:
    """The BENCHMARKS.md body of the speed section."""
    parts = [
        "## Speed: throughput per model (samples/s)",
        "",
        f"Command: `{command or 'dunemap benchmark speed'}`",
        "",
        f"Machine: {format_machine(machine)}.",
        "",
        speed_tables(rows),
        "",
        *(f"- {n}" for n in notes),
    ]
    return "\n".join(parts) + "\n"


__all__ = [
    "HOPED_GAP", "best_finding", "format_machine", "gap_finding", "machine_description", "markdown_table",
    "plot_class_heatmap", "plot_metric_bars", "replace_section", "rf_gap_finding", "speed_section", "speed_tables",
    "text_finding", "write_quality_report", "write_section",
]
