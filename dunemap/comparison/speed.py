"""The speed benchmark: forward and training throughput (samples/s) of each architecture, fp32 and bf16.

Each case builds a fresh seeded model (SegFormers fuse seeded random 384-d class texts, the MiniLM
width, so no encoder is loaded), feeds seeded random unit-length 64-band inputs, runs ``warmup``
untimed iterations and reports ``batch / median`` of ``iters`` timed ones. Training is one AdamW step
on cross-entropy, as in :mod:`dunemap.training.loop`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

import dunemap
from dunemap.comparison.report import machine_description, read_markdown, speed_section, write_section
from dunemap.errors import ConfigError
from dunemap.io.outputs import claim_outputs, staged_outputs
from dunemap.io.progress import progress_bar
from dunemap.models import ARCHITECTURES, UNetConfig, create_model
from dunemap.registry import choose
from dunemap.runtime import Predictor, autocast, resolve_device

log = logging.getLogger(__name__)

MODES = ("forward", "train")
PRECISIONS = ("fp32", "bf16")
TEXT_DIM = 384  # width of the default MiniLM class embeddings
NUM_CLASSES = 10
IN_CHANNELS = 64


@dataclass(frozen=True)
class SpeedCase:
    """One measurement: an architecture at one input size, precision and mode."""

    model: str  # a key of dunemap.models.ARCHITECTURES
    size: int  # input height = width, pixels
    precision: str  # fp32 | bf16 (autocast)
    mode: str  # forward | train


@dataclass
class SpeedConfig:
    """Options of ``dunemap benchmark speed``."""

    out: Path  # speed.json and speed.md go here
    models: list[str] = field(default_factory=lambda: ["mit_tiny", "mit_b0", "mit_b2", "unet"])
    sizes: list[int] = field(default_factory=lambda: [256])  # input sizes of every model
    extra_sizes: dict[str, list[int]] = field(default_factory=lambda: {"mit_b2": [512]})  # more sizes for some models
    precisions: list[str] = field(default_factory=lambda: list(PRECISIONS))
    modes: list[str] = field(default_factory=lambda: list(MODES))
    batch_size: int = 2
    warmup: int = 1
    iters: int = 3
    device: str = "auto"
    threads: int | None = None  # torch intra-op threads; None: torch's default
    benchmarks_md: Path | None = None  # write/replace the speed section of this file
    overwrite: bool = False  # replace speed.json and speed.md of an earlier run in ``out``
    command: str = ""
    progress: bool = True

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.benchmarks_md is not None:
            self.benchmarks_md = Path(self.benchmarks_md)
        for m in [*self.models, *self.extra_sizes]:
            choose(ARCHITECTURES, m, "model")
        for p in self.precisions:
            choose(dict.fromkeys(PRECISIONS), p, "precision")
        for m in self.modes:
            choose(dict.fromkeys(MODES), m, "speed mode")
        sizes = [*self.sizes, *(s for v in self.extra_sizes.values() for s in v)]
        if not self.models or not self.precisions or not self.modes or not self.sizes:
            raise ConfigError("speed benchmark needs at least one model, size, precision and mode")
        small = sorted({s for s in sizes if s < 32})
        if small:
            raise ConfigError(f"input size(s) {small} too small: expected at least 32 pixels")
        for name in ("batch_size", "iters"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}; expected a positive integer")
        if self.warmup < 0:
            raise ConfigError(f"warmup={self.warmup}; expected 0 or more")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads={self.threads}; expected a positive integer")

    def cases(self) -> list[SpeedCase]:
        """Every case, model by model in the given order, then size, mode and precision."""
        out = []
        for model in self.models:
            sizes = sorted(set(self.sizes) | set(self.extra_sizes.get(model, [])))
            for size in sizes:
                for mode in self.modes:
                    for precision in self.precisions:
                        out.append(SpeedCase(model, size, precision, mode))
        return out


@dataclass
class SpeedResult:
    rows: list[dict]
    files: dict[str, Path]


def build_speed_model(name: str, seed: int = 0) -> torch.nn.Module:
    """A freshly initialised model ``name`` with 64 bands and 10 classes; SegFormers fuse random 384-d texts."""
    torch.manual_seed(seed)
    if isinstance(choose(ARCHITECTURES, name, "model"), UNetConfig):
        return create_model(name, num_classes=NUM_CLASSES, in_channels=IN_CHANNELS)
    model = create_model(name, num_classes=NUM_CLASSES, in_channels=IN_CHANNELS, text_dim=TEXT_DIM,
                         fusion="cross_attn")
    text = torch.randn(NUM_CLASSES, TEXT_DIM)
    model.set_text(text / text.norm(dim=1, keepdim=True))
    return model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(case: SpeedCase, batch_size: int, warmup: int, iters: int, device: torch.device, seed: int = 0) -> dict:
    """Time one case; returns its row (median seconds per iteration and samples/s)."""
    model = build_speed_model(case.model, seed).to(device)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, IN_CHANNELS, case.size, case.size, generator=gen)
    x = (x / x.norm(dim=1, keepdim=True)).to(device)  # unit-length pixels, like AEF embeddings
    y = torch.randint(0, NUM_CLASSES, (batch_size, case.size, case.size), generator=gen).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4) if case.mode == "train" else None
    predictor = Predictor.wrap(model, device, case.precision) if optimizer is None else None  # runs it as built

    def step() -> None:
        if predictor is not None:
            predictor.forward(x)
            return
        with autocast(device, case.precision):
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.train(case.mode == "train")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    times = []
    for i in range(warmup + iters):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {**asdict(case), "batch_size": batch_size, "iters": iters, "median_s": median, "min_s": min(times),
            "max_s": max(times), "samples_per_s": batch_size / median,
            "parameters": int(sum(p.numel() for p in model.parameters())), "device": str(device),
            "load_average": load}


def _mapping_note() -> str:
    script = Path(dunemap.__file__).resolve().parents[1] / "benchmarks" / "bench_mapping.py"
    if script.is_file():
        return ("Mapping throughput (km²/s, the seed's design against ours) is measured by "
                "`benchmarks/bench_mapping.py`, not here.")
    return "Mapping throughput (km²/s) is not measured: no mapping benchmark (`benchmarks/bench_mapping.py`) exists yet."


def run_speed(config: SpeedConfig) -> SpeedResult:
    """Measure every case of ``config``, write ``speed.json`` / ``speed.md`` and the BENCHMARKS.md section.

    The outputs are claimed before anything is measured (:func:`dunemap.io.outputs.claim_outputs`: an earlier
    ``speed.json`` or ``speed.md`` needs ``overwrite``; the BENCHMARKS.md section is replaced by design) and
    published as one set, ``speed.json`` last.
    """
    if config.benchmarks_md is not None:
        read_markdown(config.benchmarks_md, "speed")  # a file that cannot take the section is refused first
    out = config.out
    files = {"markdown": out / "speed.md", "json": out / "speed.json"}
    if config.benchmarks_md is not None:
        files["benchmarks_md"] = config.benchmarks_md
    with claim_outputs([files["markdown"], files["json"]], overwrite=config.overwrite), \
            claim_outputs([config.benchmarks_md], resume=True):  # its speed section is replaced by design
        rows, body, machine = _measure_all(config)
        with staged_outputs(files["markdown"], files["json"]) as (tmp_md, tmp_json):
            tmp_md.write_text(body)
            tmp_json.write_text(json.dumps({"machine": machine, "command": config.command, "rows": rows}, indent=1))
        if config.benchmarks_md is not None:
            write_section(config.benchmarks_md, "speed", body)
    return SpeedResult(rows, files)


def _measure_all(config: SpeedConfig) -> tuple[list[dict], str, dict]:
    """The rows of every case, the markdown section and the machine's description."""
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    rows = []
    for case in progress_bar(config.cases(), enabled=config.progress, desc="speed"):
        row = measure(case, config.batch_size, config.warmup, config.iters, device)
        log.info("%s %dx%d %s %s: %.2f samples/s", case.model, case.size, case.size, case.mode, case.precision,
                 row["samples_per_s"])
        rows.append(row)
    machine = machine_description(str(device))
    native = device.type == "cuda" or machine["cpu_bf16_native"] == "yes"
    notes = [
        f"Batch {config.batch_size}; {config.warmup} warm-up and {config.iters} timed iteration(s) per case; "
        "samples/s = batch / median iteration time. Training = forward, cross-entropy, backward, AdamW step.",
        f"SegFormers fuse {NUM_CLASSES} random {TEXT_DIM}-d class texts (cross-attention at the deepest stage); "
        "bf16 = bfloat16 autocast, " + ("native on this device." if native else
                                        "emulated on this CPU (no native bf16), hence slow."),
        _mapping_note(),
    ]
    loads = [r["load_average"] for r in rows if not math.isnan(r["load_average"])]
    if loads:
        notes.append(f"1-minute load average at the start of each case: {min(loads):.1f} to {max(loads):.1f} on "
                     f"{machine['usable_cores']} usable core(s); a load above the core count means other jobs "
                     "shared the CPU and the figures are lower than on an idle machine.")
    return rows, speed_section(rows, config.command, machine, notes), machine


__all__ = ["SpeedCase", "SpeedConfig", "SpeedResult", "build_speed_model", "measure", "run_speed"]
