"""The ONNX Runtime and OpenVINO runners of a cached export, and the timing of one, without torch.

Mapping runs an export through one of :data:`RUNNERS` (:class:`dunemap.runtime.backends.ExportedPredictor`).
``auto`` times each engine's candidates (OpenVINO's fp32 and bf16 together, one after the other) in a child
process of their own (:func:`dunemap.runtime.backends.measure_apart`) that runs this file as a script: it imports
only numpy and the backend's package, neither torch nor the rest of dunemap, so a child starts in a fraction of a
second instead of the seconds importing torch takes, and the runner it measures is built with the very options
mapping builds it with.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

INPUT_NAME = "embeddings"  # the export's input (dunemap.runtime.export names it)


class OnnxRuntimeRunner:
    """An ONNX Runtime session on the CPU with ``threads`` threads, its idle threads asleep (fp32 or int8: the
    export's own precision)."""

    def __init__(self, path, threads: int, precision: str = "fp32") -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: its notices are not the user's business
        # idle threads sleep instead of spinning: they would take the CPU from the decoding thread and from torch
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {INPUT_NAME: x})[0]


# window pixels per forward pass (per stream of an OpenVINO export) on a CPU: 4 windows of 128 px, 1 of 256 px or
# more (8 or 16 of 128 px in one stream were no faster on the CPU measured and held 0.1-0.4 GiB more; 2 streams of
# 4 were 18 % faster a window than 2 of 2: BENCHMARKS.md, issue 30). A CPU map batches so many a stream
# (dunemap.mapping.predict.batch_size_for), and OpenVINO compiles its exports for exactly so many (OpenVinoRunner).
CPU_BATCH_PIXELS = 256 * 256


def request_batch(pixels: int) -> int:
    """Windows of ``pixels`` pixels in one forward pass on a CPU: as many as make :data:`CPU_BATCH_PIXELS`, at least
    one."""
    return max(1, CPU_BATCH_PIXELS // pixels)


# OpenVINO runs a map's windows as streams, a batch split between them: each core running its own share of the
# batch beat every core on one window at a time, for small windows (many small layers, each synchronising every
# thread: BENCHMARKS.md, "OpenVINO streams for small windows (issue 30)") and for 512-px ones alike (a MiT-b2
# window 121-124 against 147 ms in bf16; "Seventh round of issue 30"). A map gives each stream the batch one call
# would get alone (dunemap.mapping.predict.batch_size_for), so its automatic batch always holds a window a stream.
MAX_STREAMS = 2  # the most streams measured (on 2 cores)
# raised whenever how a runner runs an export changes (2: OpenVINO compiles a static batch, in streams for every
# window size): part of auto's timing key (dunemap.runtime.timings), so what other runners measured is measured again
RUNNERS_VERSION = 2


def stream_count(threads: int, engine: str = "openvino") -> int:
    """How many streams the runner of ``engine`` runs its windows in with ``threads`` threads: only
    :class:`OpenVinoRunner` runs several. A batch of one window (``--batch-size 1``, a block's last odd window) runs
    on one stream's threads."""
    if engine != "openvino":
        return 1
    return max(1, min(threads, MAX_STREAMS))


class OpenVinoRunner:
    """An OpenVINO model compiled for the CPU device in ``precision``. fp32 is asked for explicitly: on CPUs with AMX
    OpenVINO would run float layers in bf16 by default; bf16 asks for it (offered only where the CPU computes bf16
    natively, :func:`dunemap.runtime.device.bf16_supported`); the layers of an int8 (QDQ) export still run in int8.

    Calling it gives the export's logits. :meth:`probabilities` gives what a map blends: the softmax of the logits
    divided by a temperature plus a per-class bias (the calibration,
    :meth:`dunemap.runtime.predictor.Predictor.calibrated`), computed by the compiled model itself as a second
    output, in float32 whatever ``precision`` is, on its threads: a map's own thread then only accumulates (the
    softmax in numpy cost about 1 ms of every 4 windows of 128 px, BENCHMARKS.md, issue 30).

    The export is compiled for a static batch of ``batch`` windows (0: :func:`request_batch`, what a CPU map's
    automatic batch gives a stream; a map with ``--batch-size`` gives its share a stream), though its batch axis is
    dynamic: OpenVINO
    ran a dynamic batch 1.6x slower on the CPU measured (MiT-b0 at 128 px, 4 a pass: 3.0 against 1.9 ms a window;
    MiT-b2 at 512 px, 1 a pass: 113 against 68 ms; BENCHMARKS.md, "Eighth round of issue 30"). A call's batch is
    run in consecutive chunks of that many windows, the last one padded with zeros (their outputs dropped). An int8
    export keeps its dynamic batch.

    Windows run in :func:`stream_count` streams that share the ``threads``: the chunks of a call are run at once,
    one a stream, in rounds, and their outputs joined in order; each window's logits are those it gets on its own
    (every window is computed on its own). A call of one chunk runs on one stream (its threads alone).
    """

    def __init__(self, path, threads: int, precision: str = "fp32", bf16_input: bool = False, batch: int = 0) -> None:
        import openvino as ov
        import openvino.opset13 as ops
        from openvino.preprocess import PrePostProcessor

        core = ov.Core()
        model = core.read_model(str(path))
        shape = model.input(0).get_partial_shape()  # (batch: dynamic, C, h, w)
        self.batch = batch or request_batch(shape[2].get_length() * shape[3].get_length())
        # an int8 (QDQ) export keeps its dynamic batch: OpenVINO 2026.4's CPU plugin fails to compile it static
        self.static = precision != "int8"
        if self.static:
            model.reshape({model.input(0).get_any_name(): [self.batch, *(shape[i].get_length() for i in (1, 2, 3))]})
        if bf16_input:  # the float export fed bf16 values (their bits as uint16): no float32 input to convert
            steps = PrePostProcessor(model)
            steps.input().tensor().set_element_type(ov.Type.bf16)
            model = steps.build()
        self.bf16_input = bf16_input
        self.classes = model.output(0).get_partial_shape()[1].get_length()
        logits = model.get_results()[0].input_value(0)  # what the export's output holds, to feed two results
        temperature = ops.parameter([1], ov.Type.f32, name="temperature")
        bias = ops.parameter([self.classes, 1, 1], ov.Type.f32, name="class_bias")
        probabilities = ops.softmax(ops.add(ops.divide(logits, temperature), bias), 1)
        model = ov.Model([logits, probabilities.output(0)], [*model.get_parameters(), temperature, bias], "dunemap")
        streams = stream_count(threads)
        hint = "bf16" if precision == "bf16" else "f32"
        config = {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": streams}
        self.model = core.compile_model(model, "CPU", config)
        self.requests = [self.model.create_infer_request() for _ in range(streams)]
        self._plain = (np.ones(1, np.float32), np.zeros((self.classes, 1, 1), np.float32))

    def _inputs(self, x: np.ndarray, temperature: np.ndarray, bias: np.ndarray) -> dict:
        """What a request is given: ``x`` itself, or bf16 bits (uint16) wrapped as OpenVINO's bf16 without a copy;
        and the calibration."""
        if self.bf16_input:
            import openvino as ov

            x = ov.Tensor(np.ascontiguousarray(x, dtype=np.uint16), list(x.shape), ov.Type.bf16)
        return {0: x, 1: temperature, 2: bias}

    def _run(self, x: np.ndarray, output: int, temperature: np.ndarray, bias: np.ndarray) -> np.ndarray:
        """Output ``output`` (0: logits, 1: probabilities) of batch ``x``: its chunks of :attr:`batch` windows, one a
        stream at a time."""
        if not len(x):
            raise ValueError("an empty batch: no window to run")
        out = None
        starts = range(0, len(x), self.batch)
        for first in range(0, len(starts), len(self.requests)):
            running = []
            for request, start in zip(self.requests, starts[first : first + len(self.requests)]):
                chunk = x[start : start + self.batch]
                n = len(chunk)
                if n < self.batch and self.static:  # the compiled batch, filled with zeros
                    chunk = np.concatenate([chunk, np.zeros((self.batch - n, *chunk.shape[1:]), chunk.dtype)])
                request.start_async(self._inputs(chunk, temperature, bias))
                running.append((request, start, n))
            for request, start, n in running:
                request.wait()
                data = request.get_output_tensor(output).data
                if out is None:
                    out = np.empty((len(x), *data.shape[1:]), dtype=data.dtype)
                out[start : start + n] = data[:n]
        return out

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._run(x, 0, *self._plain)

    def probabilities(self, x: np.ndarray, temperature: float = 1.0, bias: np.ndarray | None = None) -> np.ndarray:
        """(B, K, h, w) float32 softmax over the classes of ``logits / temperature + bias`` ((K,) or None: 0)."""
        bias = self._plain[1] if bias is None else np.asarray(bias, dtype=np.float32).reshape(self.classes, 1, 1)
        return self._run(x, 1, np.full(1, temperature, dtype=np.float32), bias)


RUNNERS: dict[str, Callable] = {"onnxruntime": OnnxRuntimeRunner, "openvino": OpenVinoRunner}


def best_time(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, repeats: int) -> tuple[np.ndarray, float]:
    """``run(x)`` and its best time in seconds of ``repeats`` calls after one warm-up call."""
    out = run(x)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = run(x)
        best = min(best, time.perf_counter() - t0)
    return out, best


def main(argv: list[str]) -> None:
    """ENGINE EXPORT FOLDER THREADS REPEATS PRECISIONS: FOLDER/x.npy (uint16: bf16 values' bits) run by ENGINE in
    each of the comma-separated PRECISIONS in turn (one runner at a time), each output to
    FOLDER/logits_PRECISION.npy and a line ``PRECISION SECONDS`` printed, its best time, or ``PRECISION error
    MESSAGE`` where that precision failed (the child of :func:`dunemap.runtime.backends.measure_apart`)."""
    engine, path, folder, threads, repeats, precisions = argv
    x = np.load(Path(folder) / "x.npy")
    bf16 = {"bf16_input": True} if x.dtype == np.uint16 else {}  # bf16 values' bits (OpenVINO only)
    # OpenVINO compiles the windows a stream gets of the batch timed, as the map's runner does
    request = {"batch": -(-len(x) // stream_count(int(threads)))} if engine == "openvino" else {}
    for precision in precisions.split(","):
        try:
            out, best = best_time(RUNNERS[engine](path, int(threads), precision, **bf16, **request), x, int(repeats))
        except Exception as exc:  # this precision is left out; the others are still timed
            lines = str(exc).strip().splitlines()
            print(precision, "error", f"{type(exc).__name__}: {lines[0] if lines else ''}", flush=True)
            continue
        np.save(Path(folder) / f"logits_{precision}.npy", out)
        print(precision, best, flush=True)


__all__ = ["CPU_BATCH_PIXELS", "INPUT_NAME", "MAX_STREAMS", "RUNNERS", "RUNNERS_VERSION", "OnnxRuntimeRunner",
           "OpenVinoRunner", "best_time", "main", "request_batch", "stream_count"]


if __name__ == "__main__":
    main(sys.argv[1:])
