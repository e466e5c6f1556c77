"""The inference runtime: where and in what precision a model runs, and the one way it runs forward.

- :mod:`~dunemap.runtime.device`: device and precision resolution, the one :func:`autocast`, GPU batch sizes;
- :mod:`~dunemap.runtime.spec`: :class:`ModelSpec`, a checkpoint and how to run it;
- :mod:`~dunemap.runtime.predictor`: :class:`Predictor` and :func:`load_predictor`;
- :mod:`~dunemap.runtime.loops`: predictions and confusion matrices over a DataLoader;
- :mod:`~dunemap.runtime.export`, :mod:`~dunemap.runtime.backends`, :mod:`~dunemap.runtime.select`: the model
  from its cached ONNX export through ONNX Runtime or OpenVINO (fp32, int8), and the choice among them
  (imported where used: they load no backend package until one runs).

Layer: above ``models``, ``data`` and ``trust.applicability``; below ``mapping``, ``trust.fit``,
``evaluation`` and ``training``, which all predict through it.
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
from dunemap.runtime.loops import confusion_over, predict_over
from dunemap.runtime.predictor import Predictor, cast_autocast_weights, load_model, load_predictor
from dunemap.runtime.spec import ModelSpec

__all__ = [
    "GPU_MEMORY_SHARE", "MAX_GPU_BATCH", "PRECISIONS", "ModelSpec", "Predictor", "autocast", "bf16_supported",
    "cast_autocast_weights", "confusion_over", "gpu_batch_size", "load_model", "load_predictor", "predict_over",
    "resolve_device", "resolve_precision",
]
