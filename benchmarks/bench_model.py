"""Time the text-fused SegFormer on this machine: forward seconds per tile and training samples per second.

Forward: one tile (batch 1, eval mode, ``torch.inference_mode``), fp32 and bf16 autocast, channels-last
off and on. Training: one AdamW step on cross-entropy (train mode) at each batch size, fp32 and bf16
autocast. Every configuration gets its own seeded model (and optimizer) and ``--warmup`` untimed
calls; then the configurations of a group (forward, training) are timed round-robin, one call each
per round, so that load from other jobs on a shared CPU falls on all of them alike. Reported: the
median (and min/max) of the timed calls. Inputs are seeded random unit-length 64-d pixels, as in
AlphaEarth embeddings; labels are random class ids.

Prints a markdown table (with the exact command) and writes the same figures as JSON to ``--out``.
The defaults reproduce the figures in BENCHMARKS.md:

    python benchmarks/bench_model.py --out bench_model.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from dunemap.io.atomic import atomic_path
from dunemap.models import ARCHITECTURES, ModelConfig, build_model, model_config

# Figures of the published implementation measured on the same machine (from the issue).
REFERENCE_FORWARD_FP32_S = 0.43  # s per 512x512 tile, batch 1
REFERENCE_TRAIN_FP32_B2_S = 3.5  # s per training step of batch 2


@dataclass
class Measurement:
    kind: str  # "forward" or "train"
    precision: str  # "fp32" or "bf16" (CPU autocast)
    channels_last: bool
    batch: int
    median_s: float  # median seconds per call (one forward of the batch, or one optimizer step)
    min_s: float
    max_s: float
    repeats: int
    load_before: float  # 1-minute load average when the timed rounds of its group started (shared CPU)
    load_after: float  # ... and when they ended

    @property
    def per_tile_s(self) -> float:
        return self.median_s / self.batch

    @property
    def samples_per_s(self) -> float:
        return self.batch / self.median_s

    def reference_s(self, comparable: bool = True) -> float | None:
        """The published implementation's seconds for the same measurement, where the issue gives one.

        ``comparable`` is False when the model or tile differs from the published setup (no reference then).
        """
        if not comparable or self.precision != "fp32" or self.channels_last:
            return None
        if self.kind == "forward" and self.batch == 1:
            return REFERENCE_FORWARD_FP32_S
        if self.kind == "train" and self.batch == 2:
            return REFERENCE_TRAIN_FP32_B2_S
        return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mit_b2", choices=sorted(ARCHITECTURES), help="registered architecture")
    p.add_argument("--tile", type=int, default=512, help="tile height and width in pixels")
    p.add_argument("--bands", type=int, default=64)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--text-dim", type=int, default=384, help="width of the class text embeddings (MiniLM: 384)")
    p.add_argument("--fusion", default="cross_attn", choices=("cross_attn", "none"))
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls before timing")
    p.add_argument("--repeats", type=int, default=7, help="timed forward calls (median reported)")
    p.add_argument("--train-repeats", type=int, default=5, help="timed training steps (median reported)")
    p.add_argument("--train-batches", type=int, nargs="*", default=[2, 4], help="training batch sizes")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16"))
    p.add_argument("--channels-last", nargs="+", default=["off", "on"], choices=("off", "on"),
                   help="forward memory formats to time")
    p.add_argument("--skip-forward", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="JSON file for the results")
    return p.parse_args(argv)


def _model(args: argparse.Namespace) -> torch.nn.Module:
    torch.manual_seed(args.seed)
    overrides = {"num_classes": args.classes, "in_channels": args.bands}
    if isinstance(model_config(args.model), ModelConfig):  # SegFormer family: text fusion options apply
        overrides.update(fusion=args.fusion, text_dim=args.text_dim)
    model = build_model(model_config(args.model, **overrides))
    if getattr(model, "uses_text", False):
        model.set_text(F.normalize(torch.randn(args.classes, args.text_dim), dim=1))  # (K, D) unit rows
    return model


def _inputs(args: argparse.Namespace, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randn(batch, args.bands, args.tile, args.tile, generator=g)  # (B, C, H, W)
    x = x / x.norm(dim=1, keepdim=True)  # unit-length pixels, like AEF embeddings
    y = torch.randint(0, args.classes, (batch, args.tile, args.tile), generator=g)  # (B, H, W)
    return x, y


def _autocast(precision: str) -> torch.autocast:
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


@dataclass
class Case:
    """One configuration to time: what it is and a zero-argument call that runs it once."""

    kind: str
    precision: str
    channels_last: bool
    batch: int
    call: Callable[[], None]


def forward_case(args: argparse.Namespace, precision: str, channels_last: bool) -> Case:
    """One forward of one tile in eval mode under ``torch.inference_mode``."""
    model = _model(args).eval()
    x, _ = _inputs(args, 1)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def call() -> None:
        with torch.inference_mode(), _autocast(precision):
            model(x)

    return Case("forward", precision, channels_last, 1, call)


def train_case(args: argparse.Namespace, precision: str, batch: int) -> Case:
    """One training step: forward, cross-entropy, backward, AdamW step (as ``dunemap train``)."""
    model = _model(args).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-5, weight_decay=0.01)
    x, y = _inputs(args, batch)

    def call() -> None:
        with _autocast(precision):
            logits = model(x)  # (B, K, H, W)
            loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return Case("train", precision, False, batch, call)


def run_interleaved(cases: list[Case], warmup: int, repeats: int) -> list[Measurement]:
    """Warm every case up, then time them round-robin so that load from other jobs hits all of them alike."""
    for case in cases:
        for _ in range(warmup):
            case.call()
    load_before = os.getloadavg()[0]
    times: list[list[float]] = [[] for _ in cases]
    for _ in range(repeats):
        for case, out in zip(cases, times):
            start = time.perf_counter()
            case.call()
            out.append(time.perf_counter() - start)
    load_after = os.getloadavg()[0]
    return [
        Measurement(c.kind, c.precision, c.channels_last, c.batch, statistics.median(t), min(t), max(t), repeats,
                    load_before, load_after)
        for c, t in zip(cases, times)
    ]


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(args: argparse.Namespace) -> dict:
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "model": args.model, "tile": args.tile, "bands": args.bands, "classes": args.classes,
        "text_dim": args.text_dim, "fusion": args.fusion,
    }


def markdown_table(rows: list[Measurement], comparable: bool = True) -> str:
    lines = [
        "| measurement | precision | channels-last | batch | median s/call | min-max s | result | published (s/call) | load avg |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in rows:
        result = f"{m.per_tile_s:.3f} s/tile" if m.kind == "forward" else f"{m.samples_per_s:.2f} samples/s"
        ref = m.reference_s(comparable)
        ref_text = f"{ref:.2f} ({m.median_s / ref:.2f}x)" if ref is not None else "-"
        what = "forward (eval, inference_mode)" if m.kind == "forward" else "train step (AdamW, CE)"
        lines.append(
            f"| {what} | {m.precision} | {'on' if m.channels_last else 'off'} | {m.batch} | {m.median_s:.3f} | "
            f"{m.min_s:.3f}-{m.max_s:.3f} | {result} | {ref_text} | {m.load_before:.1f}->{m.load_after:.1f} |"
        )
    return "\n".join(lines)


def write_report(path: Path, command: str, env: dict, args: argparse.Namespace, rows: list[Measurement],
                 comparable: bool) -> None:
    """Write the results so far as JSON (atomically, so a rerun never leaves a half-written file)."""
    report = {
        "command": command,
        "environment": env,
        "warmup": args.warmup,
        "results": [asdict(m) | {"per_tile_s": m.per_tile_s, "samples_per_s": m.samples_per_s,
                                 "reference_s": m.reference_s(comparable)} for m in rows],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    command = shlex.join(["python", *sys.argv]) if argv is None else shlex.join(["python", __file__, *argv])
    env = environment(args)
    # The published figures are for mit_b2 with text fusion on 512 x 512 x 64 tiles and 10 classes.
    comparable = (args.model, args.tile, args.bands, args.classes, args.fusion) == ("mit_b2", 512, 64, 10, "cross_attn")
    groups = []
    if not args.skip_forward:
        groups.append(("forward", args.repeats,
                       lambda: [forward_case(args, p, cl == "on") for p in args.precisions for cl in args.channels_last]))
    if args.train_batches:
        groups.append(("train", args.train_repeats,
                       lambda: [train_case(args, p, b) for p in args.precisions for b in args.train_batches]))
    rows: list[Measurement] = []
    for name, repeats, make_cases in groups:
        rows += run_interleaved(make_cases(), args.warmup, repeats)
        write_report(args.out, command, env, args, rows, comparable)  # partial results survive an interrupted run
        print(f"done: {name}", file=sys.stderr, flush=True)

    print(f"Command: `{command}`\n")
    print(f"{env['model']} (fusion {env['fusion']}, text dim {env['text_dim']}, {env['classes']} classes), "
          f"{env['bands']} bands, {env['tile']}x{env['tile']} px; torch {env['torch']}, {env['torch_threads']} threads "
          f"on {env['cpu']} ({env['logical_cpus']} logical CPUs, {env['cpu_capability']}); median of "
          f"{args.repeats} forward / {args.train_repeats} training calls after {args.warmup} warm-up. "
          "Configurations are timed round-robin. The CPU may be shared with other jobs: the load column is "
          f"the 1-minute load average before->after the timed rounds (above {env['logical_cpus']} means "
          "contention; then min is the better estimate of the uncontended time).\n")
    print(markdown_table(rows, comparable))
    print(f"\nJSON: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
