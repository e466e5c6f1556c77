"""Where and in what precision the model runs: device and precision resolution shared by training,
evaluation and mapping, the one autocast context, and the GPU batch size chosen from free memory.

One rule for everyone: ``--device auto`` is the GPU of this rank when CUDA exists, else the CPU;
``--precision auto`` is bf16 where bf16 matmuls are native (CUDA with bf16, a CPU with AVX512-BF16
or AMX), else fp32.
"""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from dunemap.errors import CheckpointError, ConfigError

PRECISIONS = ("auto", "fp32", "bf16")
GPU_MEMORY_SHARE = 0.5  # share of the free GPU memory a mapping batch may take (the rest: allocator slack, others)
MAX_GPU_BATCH = 64  # windows per forward pass on a GPU, at most
# /proc/cpuinfo flags that decide the speed of inference on a CPU: wide vectors, int8 dot products, native bf16
CPU_SPEED_FLAGS = {"avx2": "AVX2", "avx512f": "AVX-512F", "avx512_vnni": "AVX512-VNNI", "avx_vnni": "AVX-VNNI",
                   "avx512_bf16": "AVX512-BF16", "amx_bf16": "AMX-BF16", "amx_int8": "AMX-INT8"}
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # bf16 matmuls native on the CPU


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` as a device; ``cuda`` means GPU ``local_rank`` (one per rank)."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name!r} is not a device dunemap can use; valid: auto, cpu, cuda, cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)  # one GPU per torchrun rank, not every rank on GPU 0
    return device


def _cpuinfo(text: str | None) -> tuple[str, set[str]]:
    """The first model name and flags of /proc/cpuinfo (``text``, read when None; empty where it cannot be)."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            text = ""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not model:
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def cpu_info(cpuinfo: str | None = None) -> dict:
    """The CPU's model name and which of :data:`CPU_SPEED_FLAGS` it has, by their names (``cpuinfo``: the text
    of /proc/cpuinfo, read when not given; the platform's processor name and no flags where it cannot be read)."""
    model, flags = _cpuinfo(cpuinfo)
    return {"model": model or platform.processor() or platform.machine() or "unknown",
            "flags": [name for flag, name in CPU_SPEED_FLAGS.items() if flag in flags]}


def describe_cpu(info: dict | None = None) -> str:
    """``MODEL (FLAG, FLAG, ...)`` of :func:`cpu_info` (this CPU's when None): one line for reports and tables."""
    info = cpu_info() if info is None else info
    return f"{info['model']} ({', '.join(info['flags']) or 'none of ' + ', '.join(CPU_SPEED_FLAGS.values())})"


def bf16_supported(device: torch.device) -> bool:
    """True where bf16 matmuls are native: CUDA with bf16, or a CPU with AVX512-BF16 or AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    return any(flag in _cpuinfo(None)[1] for flag in BF16_CPU_FLAGS)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``, ``fp32`` or ``bf16`` as ``fp32`` or ``bf16`` on ``device`` (auto: bf16 only where native)."""
    if precision not in PRECISIONS:
        raise CheckpointError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    return precision


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The autocast context of a resolved ``precision`` on ``device``: bf16 autocast for ``bf16``, off for ``fp32``.

    The one autocast of dunemap: training steps, the Predictor and the speed benchmark all run in it.
    bf16 has float32's range, so no loss scaling and no fp16 fallback are needed.
    """
    if precision not in ("fp32", "bf16"):
        raise ConfigError(f"precision {precision!r} is not resolved; resolve_precision gives fp32 or bf16")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def gpu_batch_size(device: torch.device, bytes_per_window: int, free_bytes: int | None = None) -> int:
    """Windows per forward pass on ``device``: 1 on a CPU; on a GPU as many as fit in
    :data:`GPU_MEMORY_SHARE` of its free memory at ``bytes_per_window`` each (at most :data:`MAX_GPU_BATCH`)."""
    if device.type != "cuda":
        return 1
    if free_bytes is None:
        free_bytes, _total = torch.cuda.mem_get_info(device)
    return int(max(1, min(MAX_GPU_BATCH, free_bytes * GPU_MEMORY_SHARE // max(bytes_per_window, 1))))
