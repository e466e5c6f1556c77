"""The inference runtime: where and in what precision a model runs, and the one way it runs forward.

- :mod:`~dunemap.runtime.device`: device and precision resolution, the one :func:`autocast`, GPU batch sizes;
- :mod:`~dunemap.runtime.spec`: :class:`ModelSpec`, a checkpoint and how to run it.
"""

from dunemap.runtime.device import (
    GPU_MEMORY_SHARE,
    MAX_GPU_BATCH,
    PRECISIONS,
    autocast,
    bf16_supported,
    gpu_batch_size,
    resolve_device,
    resolve_precision,
)
from dunemap.runtime.spec import ModelSpec

__all__ = [
    "GPU_MEMORY_SHARE", "MAX_GPU_BATCH", "PRECISIONS", "ModelSpec", "autocast", "bf16_supported", "gpu_batch_size",
    "resolve_device", "resolve_precision",
]
