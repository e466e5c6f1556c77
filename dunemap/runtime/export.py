"""ONNX exports of a model, made once per checkpoint, window and precision and kept in the user's cache.

An export holds the network with its class-text embeddings baked in as constants, for square windows of one side and
any batch size. It takes either the embeddings, float32, or (``codes``) AEF int8 codes as uint8 bits, which its
first operation decodes by the reference codec's 256-entry table (:func:`dunemap.io.aef.bits_table`): the same
values, so the same logits, and the mapping copies codes (a quarter of the bytes) instead of decoding every window
it feeds the backend, whose own threads do the look-up. It lives in ``cache_root()/exports`` (``$DUNEMAP_CACHE``,
else ``$XDG_CACHE_HOME/dunemap``, else ``~/.cache/dunemap``), never beside the weights, named after the graph's
version (:data:`EXPORT_GRAPH`), the checkpoint's SHA-256, the window, the precision and the input; each file has a
``.sha256`` sidecar of its bytes. A file whose bytes no longer match its sidecar (a partial copy, a disk error) is
logged in one line and made again. Files are written through :func:`dunemap.io.atomic.atomic_path`.

int8 exports are quantised statically (:func:`onnxruntime.quantization.quantize_static`, QDQ format, per-channel
weights of the convolutions and matrix products) from the fp32 export, with windows of the raster being mapped as
calibration data.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from dunemap.errors import CheckpointError, ConfigError
from dunemap.io.aef import bits_table
from dunemap.io.atomic import atomic_path
from dunemap.io.checksum import file_sha256
from dunemap.knowledge.text import CACHE_ENV
from dunemap.runtime.engines import INPUT_NAME

log = logging.getLogger(__name__)

EXPORT_PRECISIONS = ("fp32", "int8")
# the version of the exported graph, part of every export's name: raised whenever the model's code or the export's
# wrapper changes the graph (2: tokens become grids as channels-last views), so that an export an older dunemap
# cached for the same checkpoint is made again instead of run
EXPORT_GRAPH = 2
ONNX_OPSET = 17
OUTPUT_NAME = "logits"
QUANTIZED_OPS = ["Conv", "MatMul", "Gemm"]  # int8 where the time goes; norms, softmax and residual adds stay float


def cache_root() -> Path:
    """dunemap's cache folder: ``$DUNEMAP_CACHE``, else ``$XDG_CACHE_HOME/dunemap``, else ``~/.cache/dunemap``."""
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "dunemap"


def export_path(checkpoint_sha256: str | None, window: int, precision: str = "fp32",
                cache_dir: str | os.PathLike | None = None, codes: bool = False) -> Path:
    """Where the export of a checkpoint (by its SHA-256) for ``window``-px windows in ``precision`` is cached (with
    ``codes``: the export that takes AEF int8 codes, fp32 only)."""
    if not checkpoint_sha256:
        raise CheckpointError("this model was not loaded from a checkpoint file: it has no SHA-256 to cache an "
                              "export under; use --backend torch")
    if precision not in EXPORT_PRECISIONS:
        raise ConfigError(f"export precision {precision!r}: expected one of {', '.join(EXPORT_PRECISIONS)}")
    if codes and precision != "fp32":
        raise ConfigError(f"an export that takes AEF codes is made in fp32 only, not {precision}")
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "exports"
    return root / f"g{EXPORT_GRAPH}_{checkpoint_sha256}_w{window}_{precision}{'_codes' if codes else ''}.onnx"


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def cached(path: Path) -> bool:
    """Whether ``path`` holds an export whose bytes match its sidecar; a mismatch is logged (it will be rebuilt)."""
    if not path.is_file():
        return False
    sidecar = _sidecar(path)
    expected = sidecar.read_text().strip() if sidecar.is_file() else ""
    if expected and file_sha256(path) == expected:
        return True
    log.warning("%s: the cached export does not match its checksum (%s); exporting it again", path,
                "sidecar missing" if not expected else "corrupt file")
    return False


def _publish(tmp: Path, path: Path) -> None:
    """Write the sidecar of the finished temporary file ``tmp`` that is about to become ``path``."""
    with atomic_path(_sidecar(path)) as side:
        side.write_text(file_sha256(tmp) + "\n")


class CodesInput(torch.nn.Module):
    """``model`` fed AEF int8 codes: (B, C, h, w) uint8, the codes' bits, looked up in
    :func:`~dunemap.io.aef.bits_table` (an ONNX Gather) before the model runs on the values."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("table", torch.from_numpy(bits_table().copy()), persistent=False)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.model(self.table[codes.long()])


def export_onnx(model: torch.nn.Module, window: int, path: Path, codes: bool = False) -> Path:
    """Export ``model`` (float32, eval mode) for (B, C, window, window) inputs to ``path`` (once: a valid cached
    file is used as it is): float32 embeddings, or with ``codes`` AEF int8 codes as uint8 (:class:`CodesInput`).
    The TorchScript exporter traces one window size; the batch stays dynamic."""
    if cached(path):
        log.debug("using the cached export %s", path)
        return path
    in_channels = int(model.config.in_channels)
    x = torch.zeros(1, in_channels, window, window, dtype=torch.uint8 if codes else torch.float32)
    log.info("exporting the model to ONNX for %d px windows%s: %s", window, " of AEF codes" if codes else "", path)
    # the wrapper in the model's own mode: the exporter restores the mode it finds, and a new module trains
    model = CodesInput(model).train(model.training) if codes else model
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's own notices (legacy exporter, traced size checks)
        with torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(model, (x,), str(tmp), dynamo=False, opset_version=ONNX_OPSET,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
        _publish(tmp, path)
    return path


def quantize_int8(fp32_path: Path, windows: Sequence[np.ndarray], path: Path) -> Path:
    """Statically quantise the fp32 export at ``fp32_path`` to int8 (QDQ) at ``path``, its activation ranges
    calibrated on ``windows`` ((C, h, w) float32 arrays of the raster to map); a valid cached file is used as it is."""
    if cached(path):
        log.debug("using the cached int8 export %s", path)
        return path
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class _Windows(CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter([{INPUT_NAME: np.ascontiguousarray(w[None], dtype=np.float32)} for w in windows])

        def get_next(self) -> dict | None:
            return next(self._items, None)

    log.info("quantising the export to int8 on %d calibration window(s): %s", len(windows), path)
    with atomic_path(path) as tmp, tempfile.TemporaryDirectory(dir=path.parent, prefix=".quantize.") as work:
        pre = Path(work) / "pre.onnx"  # the fp32 model with shapes inferred: a step, removed with its folder
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
            quantize_static(str(pre), str(tmp), _Windows(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=QUANTIZED_OPS)
        _publish(tmp, path)
    return path


__all__ = ["EXPORT_PRECISIONS", "INPUT_NAME", "OUTPUT_NAME", "CodesInput", "cache_root", "cached", "export_onnx",
           "export_path", "quantize_int8"]
