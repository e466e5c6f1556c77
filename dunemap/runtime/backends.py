"""Inference backends: the model run by torch, or from its ONNX export by ONNX Runtime or OpenVINO (fp32, bf16, int8).

:data:`BACKENDS` is the registry the ``--backend`` option chooses from. ``torch`` is the
:class:`~dunemap.runtime.predictor.Predictor` itself (bf16 where :func:`resolve_precision` picks it).
The others run the cached export (:mod:`dunemap.runtime.export`) on the CPU through an
:class:`ExportedPredictor`, which gives the same calibrated logits a Predictor gives (the backend's raw
logits, then the Predictor's own temperature and class bias) and passes windows of any other size to
the fp32 torch model. ``auto`` measures every installed candidate (:mod:`dunemap.runtime.select`).
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import logging
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from dunemap.errors import ConfigError, InputError
from dunemap.io.aef import bits_table
from dunemap.registry import choose
from dunemap.runtime import engines
from dunemap.runtime.device import bf16_supported
from dunemap.runtime.engines import RUNNERS, best_time
from dunemap.runtime.export import export_onnx, export_path, quantize_int8
from dunemap.runtime.predictor import Predictor, softmax

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install -e ".[fast]"'
# engines whose fp32 exports take AEF int8 codes and decode them as their first operation: OpenVINO's look-up runs in
# its own threads, while ONNX Runtime's Gather of single values was slower than decoding in numpy. OpenVINO in bf16
# takes bf16 values instead (:func:`input_kind`): decoded here into bf16 at 1.1 ms a 128 px window on one core, where
# its graph spent 2.2 ms of both cores on the look-up, the uint8 conversion and the float reorder (BENCHMARKS.md,
# issue 30)
CODES_ENGINES = ("openvino",)
BF16_INPUT_ENGINES = ("openvino",)  # engines whose bf16 backend is fed bf16 values (their bits as uint16)


@dataclass(frozen=True)
class Backend:
    """One way to run the model: an engine, the package it needs and the precision of its export."""

    engine: str  # torch, onnxruntime or openvino
    precision: str  # fp32, bf16 (run from the fp32 export) or int8 for the exports; torch: the Predictor's precision
    package: str | None = None  # the module to import; None for torch


BACKENDS: dict[str, Backend | None] = {
    "auto": None,  # measure the installed candidates on the raster, keep the faithful ones, take the fastest
    "torch": Backend("torch", "model"),
    "onnxruntime": Backend("onnxruntime", "fp32", "onnxruntime"),
    "onnxruntime-int8": Backend("onnxruntime", "int8", "onnxruntime"),
    "openvino": Backend("openvino", "fp32", "openvino"),
    "openvino-bf16": Backend("openvino", "bf16", "openvino"),
    "openvino-int8": Backend("openvino", "int8", "openvino"),
}
BACKEND_NAMES = tuple(BACKENDS)


def backend_name(engine: str, precision: str) -> str:
    """The registry key of ``engine`` in ``precision`` (torch: any precision)."""
    if engine == "torch":
        return "torch"
    return engine if precision == "fp32" else f"{engine}-{precision}"


@dataclass(frozen=True)
class BackendChoice:
    """The backend a map ran with and how it measured: recorded in the map's tags and the run's report."""

    engine: str  # torch, onnxruntime or openvino
    precision: str  # fp32, bf16 or int8
    agreement: float | None = None  # share of a calibration window's valid pixels whose class equals fp32 torch's
    seconds: float | None = None  # seconds per window as measured on the raster (None: not measured)
    reason: str = ""  # why: asked for by name, measured fastest, a fallback
    calibration: str | None = None  # digest of the int8 calibration windows (the export's cache key)
    measured: tuple[tuple[str, float, float], ...] = ()  # auto: (name, agreement, seconds) of every candidate

    @property
    def name(self) -> str:
        return backend_name(self.engine, self.precision)

    def tags(self) -> dict[str, str]:
        """Provenance tags of a map made with this choice."""
        tags = {"BACKEND": self.engine, "BACKEND_PRECISION": self.precision}
        if self.agreement is not None:
            tags["BACKEND_AGREEMENT"] = f"{self.agreement:.5f}"
        if self.seconds is not None:
            tags["BACKEND_SECONDS_PER_WINDOW"] = f"{self.seconds:.4f}"
        return tags

    def describe(self) -> str:
        extra = [f"{self.agreement:.2%} agreement with fp32 torch" if self.agreement is not None else "",
                 f"{self.seconds:.3f} s per window" if self.seconds is not None else "", self.reason]
        return f"{self.name} ({self.precision})" + "".join(f", {e}" for e in extra if e)


@dataclass
class Samples:
    """Windows of the raster being mapped, each (C, h, w) float32, with their valid pixels (h, w): the first one
    is timed and scored for ``auto``, all of them calibrate int8 exports."""

    source: str  # the raster they come from (messages)
    windows: list[np.ndarray] = field(default_factory=list)
    valid: list[np.ndarray] = field(default_factory=list)
    codes: list[np.ndarray] = field(default_factory=list)  # the windows' AEF codes, (C, h, w) uint8 bits, if stored so
    # seconds preparing one window takes per input (channels_last: torch; values: exports; codes): added to the
    # model's time by auto (dunemap.mapping.backend.input_seconds); empty until :meth:`preparation` times them
    prepare_seconds: dict[str, float] = field(default_factory=dict)
    timer: Callable[[], dict[str, float]] | None = field(default=None, repr=False, compare=False)

    def preparation(self) -> dict[str, float]:
        """:attr:`prepare_seconds`, timed by ``timer`` on first use: only a run that measures the backends needs them
        (one that reuses an earlier run's timings does not, :mod:`dunemap.runtime.timings`)."""
        if not self.prepare_seconds and self.timer is not None:
            self.prepare_seconds, self.timer = self.timer(), None
        return self.prepare_seconds

    def digest(self) -> str:
        h = hashlib.sha256()
        for w in self.windows:
            h.update(np.ascontiguousarray(w, dtype=np.float32).tobytes())
        return h.hexdigest()[:16]

    def require(self, what: str) -> Samples:
        if not self.windows:
            raise InputError(f"{self.source}: too few valid pixels to {what} (no window of the map is at least "
                             "half valid data); map it with --backend torch or onnxruntime/openvino in fp32")
        return self


def require_package(name: str, asked: bool) -> bool:
    """Whether the package of backend ``name`` imports; asked for by name and missing is a ConfigError."""
    spec = choose(BACKENDS, name, "backend")
    try:
        importlib.import_module(spec.package)
    except ImportError:
        if asked:
            raise ConfigError(f"--backend {name}: the package {spec.package} is not installed; {INSTALL_HINT} "
                              "installs it (or use --backend torch)") from None
        return False
    return True


class ExportedPredictor:
    """A Predictor's model run from its ONNX export: what mapping needs (:class:`SupportsPredict`).

    ``base`` is the fp32 torch Predictor the export was made from; every attribute not defined here
    (classes, colours, temperature, scene prior, ...) is the base's, and :meth:`predict` divides by its
    temperature and adds its class bias exactly as it does. Windows of another size than the export's
    run through ``base``.

    ``runners`` holds a runner per input the predictor was built for (:func:`input_kind`): ``"values"`` (float32
    embeddings), ``"bf16"`` (bf16 embeddings, OpenVINO in bf16) or, where the engine decodes AEF codes itself
    (:data:`CODES_ENGINES`), ``"codes"`` (uint8 code bits, the export of :func:`dunemap.runtime.export.export_onnx`
    with ``codes``). A uint8 batch runs on the codes runner, a bf16 one on the bf16 runner, anything else on the
    values runner; the one missing is built on first use. :attr:`takes_codes` tells mapping to copy an int8
    raster's windows as codes instead of decoding them, :attr:`input_dtype` what to decode them into.
    """

    channels_last = False  # the exports read (B, C, H, W) contiguous: windows are decoded so, not transposed here
    device = torch.device("cpu")

    def __init__(self, base: Predictor, choice: BackendChoice, runners: dict[str, Callable[[np.ndarray], np.ndarray]],
                 window: int, build: Callable[[str], Callable[[np.ndarray], np.ndarray]] | None = None) -> None:
        self.base = base
        self.choice = choice
        self.runners = dict(runners)
        self.build = build  # makes the runner of an input not built yet (None: only ``runners``)
        self.window = window
        self.precision = choice.precision
        self.backend = choice.name
        self.engine = choice.engine  # the BACKEND tag (dunemap.raster.tags.model_tags)

    @property
    def streams(self) -> int:
        """How many streams the runner runs a batch in, by the rule it was built with
        (:func:`dunemap.runtime.engines.stream_count`): a CPU map gives each the batch one call would get alone."""
        return engines.stream_count(torch.get_num_threads(), self.engine)

    @property
    def takes_codes(self) -> bool:
        """Whether int8 windows go in as codes (a codes runner was built: the raster to map stores AEF codes)."""
        return "codes" in self.runners

    @property
    def input_dtype(self) -> torch.dtype:
        """What mapping decodes windows into: bf16 for a runner built for bf16 values, else float32."""
        return torch.bfloat16 if "bf16" in self.runners else torch.float32

    def runner(self, x: np.ndarray) -> np.ndarray:
        """The export's raw logits of ``x`` (B, C, h, w) row-major: uint8 codes, bf16 values' bits (uint16) or
        float32 values."""
        return self.runner_for(x)(x)

    def runner_for(self, x: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """The runner of ``x``'s input kind (built on first use)."""
        kind = {np.dtype(np.uint8): "codes", np.dtype(np.uint16): "bf16"}.get(x.dtype, "values")
        if kind not in self.runners:
            if self.build is None:
                raise ConfigError(f"backend {self.backend} was built without an export for {kind} input")
            self.runners[kind] = self.build(kind)
        return self.runners[kind]

    def __getattr__(self, name: str):
        if name == "base":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.base, name)

    def __copy__(self) -> ExportedPredictor:
        """A copy with its own base, so :meth:`use_ground` on it leaves the original's class bias alone."""
        return ExportedPredictor(copy.copy(self.base), self.choice, self.runners, self.window, self.build)

    def use_ground(self, crs, bounds) -> bool:
        return self.base.use_ground(crs, bounds)

    def raw_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The model's own logits (B, K, H, W) float32 for x (B, C, H, W)."""
        if tuple(x.shape[-2:]) != (self.window, self.window):
            if x.dtype == torch.uint8:  # codes: decoded as the export decodes them
                x = torch.from_numpy(decode_codes(x.numpy()))
            return self.base.forward(x.float()).float()
        return torch.from_numpy(self.runner(_row_major(x)))

    @torch.inference_mode()
    def numpy_logits(self, x: torch.Tensor) -> np.ndarray:
        """:meth:`predict`'s calibrated logits of ``x`` as numpy, calibrated in numpy on this thread: mapping takes
        their softmax there too, where torch's thread pool, woken for each small operation beside the backend's
        own threads, cost several times the CPU of the work itself (BENCHMARKS.md, issue 30)."""
        if tuple(x.shape[-2:]) != (self.window, self.window):
            return self.predict(x).numpy()
        return self.base.calibrated(self.runner(_row_major(x)))

    @torch.inference_mode()
    def numpy_probabilities(self, x: torch.Tensor) -> np.ndarray:
        """The softmax of :meth:`numpy_logits` (B, K, h, w) float32: what a map blends. A runner that computes it
        itself (:meth:`dunemap.runtime.engines.OpenVinoRunner.probabilities`) is given the temperature and class
        bias; otherwise it is taken in numpy on this thread."""
        if tuple(x.shape[-2:]) != (self.window, self.window):
            return softmax(self.predict(x).numpy())
        rows = _row_major(x)
        runner = self.runner_for(rows)
        if not hasattr(runner, "probabilities"):
            return softmax(self.base.calibrated(runner(rows)))
        bias = self.base.class_bias
        return runner.probabilities(rows, self.base.temperature, None if bias is None else bias.float().cpu().numpy())

    @torch.inference_mode()
    def predict(self, x: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Calibrated logits as :meth:`Predictor.predict` gives them (numpy in, numpy out)."""
        if isinstance(x, np.ndarray):
            return self.base.predict_numpy(x, self.predict)
        return self.base.calibrated(self.raw_logits(x))

    def predict_with_dissimilarity(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The exports hold no decoder features: the area of applicability is computed by torch."""
        return self.base.predict_with_dissimilarity(x)


def _row_major(x: torch.Tensor) -> np.ndarray:
    """A batch (B, C, H, W) as the exports read it: row-major numpy, uint8 codes, bf16 values' bits as uint16 (numpy
    has no bf16) or float32 values."""
    x = x.detach().to("cpu")
    if x.dtype == torch.bfloat16:
        return np.ascontiguousarray(x.contiguous().view(torch.int16).numpy().view(np.uint16))
    return np.ascontiguousarray(x.to(torch.uint8 if x.dtype == torch.uint8 else torch.float32).numpy())


def bf16_values(bits: np.ndarray) -> np.ndarray:
    """float32 values of bf16 bits (uint16): exact, bf16 being float32's upper half."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def decode_codes(codes: np.ndarray) -> np.ndarray:
    """float32 values of AEF code bits (uint8, any shape), by the reference codec's table: what a codes export
    computes first, for a backend that takes values and for the windows of another size that torch runs."""
    return bits_table()[codes]


def takes_codes(name: str, codes: bool) -> bool:
    """Whether backend ``name`` reads AEF int8 codes (``codes``: the raster stores them): its engine decodes them
    itself (:data:`CODES_ENGINES`) and it runs in fp32 (an int8 export is calibrated on values; bf16 is fed bf16
    values, :func:`input_kind`)."""
    spec = choose(BACKENDS, name, "backend")
    return codes and spec.engine in CODES_ENGINES and spec.precision == "fp32"


def input_kind(name: str, codes: bool) -> str:
    """What backend ``name`` is fed (``codes``: the raster stores AEF codes): ``"codes"`` (:func:`takes_codes`),
    ``"bf16"`` values (a bf16 backend of :data:`BF16_INPUT_ENGINES`, whatever the raster stores) or ``"values"``
    (float32)."""
    spec = choose(BACKENDS, name, "backend")
    if takes_codes(name, codes):
        return "codes"
    return "bf16" if spec.precision == "bf16" and spec.engine in BF16_INPUT_ENGINES else "values"


def exported_path(reference: Predictor, name: str, window: int, codes: bool = False,
                  samples: Samples | None = None) -> Path:
    """The cached export backend ``name`` runs for ``window``-px windows of the fp32 ``reference``, made if needed:
    fp32 (bf16 runs it too), that of AEF codes with ``codes``, or int8 quantised on ``samples``."""
    spec = choose(BACKENDS, name, "backend")
    if spec.precision == "int8":  # checked before anything is exported
        samples = (samples or Samples("the raster")).require("calibrate an int8 model")
    sha = reference.checkpoint_sha256
    path = export_onnx(reference.model, window, export_path(sha, window, "fp32", codes=codes), codes=codes)
    if spec.precision != "int8":
        return path
    int8 = export_path(sha, window, "int8").with_suffix(f".{samples.digest()}.onnx")
    return quantize_int8(path, samples.windows, int8)


def build_exported(reference: Predictor, name: str, window: int, samples: Samples | None = None,
                   codes: bool = False, request: int = 0) -> ExportedPredictor:
    """The exported backend ``name`` of the fp32 ``reference`` for ``window``-px windows (int8: calibrated on
    ``samples``), its runner built for the raster's input: AEF codes (``codes``) where the backend decodes them
    itself (:func:`takes_codes`), else values; OpenVINO's compiled for ``request`` windows a forward pass (0: the
    automatic batch's, :func:`dunemap.runtime.engines.request_batch`). Exports are made once and cached
    (:func:`dunemap.runtime.export.export_path`)."""
    spec = choose(BACKENDS, name, "backend")
    if spec.precision == "bf16" and not bf16_supported(torch.device("cpu")):
        raise ConfigError(f"--backend {name}: this CPU does not compute bf16 natively (no AVX512-BF16 or AMX); "
                          "use --backend openvino")
    calibration = None
    if spec.precision == "int8":  # checked before anything is exported
        calibration = (samples or Samples("the raster")).require("calibrate an int8 model").digest()

    def build(kind: str) -> Callable[[np.ndarray], np.ndarray]:
        if kind == "codes" and not takes_codes(name, True):  # decoded here, run as values
            values = build("values")
            return lambda x: values(decode_codes(x))
        if kind == "bf16" and input_kind(name, False) != "bf16":  # widened here, run as values
            values = build("values")
            return lambda x: values(bf16_values(x))
        path = exported_path(reference, name, window, kind == "codes", samples)
        bf16 = {"bf16_input": True} if kind == "bf16" else {}
        batch = {"batch": request} if spec.engine == "openvino" else {}
        return RUNNERS[spec.engine](path, torch.get_num_threads(), spec.precision, **bf16, **batch)

    kind = input_kind(name, codes)
    choice = BackendChoice(spec.engine, spec.precision, reason="asked for by name", calibration=calibration)
    return ExportedPredictor(reference, choice, {kind: build(kind)}, window, build)


def measure_apart(engine: str, path: Path, x: torch.Tensor, repeats: int = 2,
                  precisions: Sequence[str] = ("fp32",)) -> dict[str, tuple[torch.Tensor, float] | RuntimeError]:
    """For each of ``precisions``, the raw logits of ``x`` (values, bf16 values, or uint8 codes for an export of
    codes) by ``engine`` running the export at ``path`` in that precision and its best time of ``repeats`` after a
    warm-up run, or the RuntimeError it failed with. They are measured in turn in one child process (one start and
    import for the precisions of an engine that share an input): what a backend allocates (sessions, arenas,
    compiled graphs) leaves with it, so measuring several costs this process no memory (``auto`` would otherwise
    hold them all at once). The child runs
    :mod:`dunemap.runtime.engines` as a file, which imports neither torch nor dunemap: it starts in a fraction of a
    second. A child that fails as a whole raises its RuntimeError.
    """
    with tempfile.TemporaryDirectory(prefix="dunemap-measure-") as tmp:
        np.save(Path(tmp) / "x.npy", _row_major(x))  # codes, bf16 bits or float32 values, as the map feeds them
        code = "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
        done = subprocess.run([sys.executable, "-c", code, engines.__file__, engine, str(path), tmp,
                               str(torch.get_num_threads()), str(repeats), ",".join(precisions)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines()
            raise RuntimeError(lines[-1] if lines else f"the measuring process exited with {done.returncode}")
        results: dict[str, tuple[torch.Tensor, float] | RuntimeError] = {}
        for line in done.stdout.splitlines():
            precision, _, rest = line.partition(" ")
            if precision not in precisions:  # anything else a backend printed
                continue
            if rest.startswith("error "):
                results[precision] = RuntimeError(rest[len("error "):])
            else:
                results[precision] = (torch.from_numpy(np.load(Path(tmp) / f"logits_{precision}.npy")), float(rest))
        for precision in precisions:
            results.setdefault(precision, RuntimeError("the measuring process reported nothing"))
        return results


def fp32_reference(predictor: Predictor, load: Callable[[], Predictor]) -> Predictor:
    """``predictor`` when it runs in fp32 on the CPU, else a fp32 CPU Predictor from ``load``."""
    if predictor.precision == "fp32" and predictor.device.type == "cpu":
        return predictor
    return load()


def argmax_agreement(logits: torch.Tensor, reference: torch.Tensor, valid: np.ndarray) -> float:
    """Share of the ``valid`` pixels (h, w) where the classes of ``logits`` and ``reference`` (1, K, h, w) agree."""
    same = (logits.argmax(dim=1) == reference.argmax(dim=1))[0].numpy()
    return float(same[valid].mean()) if valid.any() else 1.0


def measure(predictor, x: torch.Tensor, repeats: int = 2) -> tuple[torch.Tensor, float]:
    """``predictor``'s calibrated logits for ``x`` and its best time of ``repeats`` after one warm-up run."""
    out, best = best_time(predictor.predict, x, repeats)
    return out.float(), best


def window_tensor(window: np.ndarray) -> torch.Tensor:
    """One (C, h, w) window as the (1, C, h, w) float32 input of every backend."""
    return torch.from_numpy(np.ascontiguousarray(window, dtype=np.float32))[None]


def candidates(precision: str) -> Sequence[str]:
    """The exported backends ``auto`` tries when the model's precision option is ``precision``: the fp32 ones for
    auto and fp32, and for auto and bf16 ``openvino-bf16`` where the CPU computes bf16 natively
    (:func:`~dunemap.runtime.device.bf16_supported`).

    The int8 exports run only when asked for by name: their calibration holds every activation of a window at
    once (3.4 GiB peak for a MiT-b2 at 512 px, over the mapping's 2 GiB budget) and is redone for every raster
    (about 30 s), and on the CPUs measured they were no faster than fp32 and agreed with it on 96.6-97.0 % of
    the pixels, below auto's 99.5 % (BENCHMARKS.md, "Inference backends").
    """
    names = ["onnxruntime", "openvino"] if precision in ("auto", "fp32") else []
    if precision in ("auto", "bf16") and bf16_supported(torch.device("cpu")):
        names.append("openvino-bf16")
    return names


__all__ = ["BACKENDS", "BACKEND_NAMES", "BF16_INPUT_ENGINES", "CODES_ENGINES", "Backend", "BackendChoice",
           "ExportedPredictor", "Samples", "argmax_agreement", "backend_name", "bf16_values", "build_exported",
           "candidates", "decode_codes", "exported_path", "fp32_reference", "input_kind", "measure", "measure_apart",
           "require_package", "takes_codes", "window_tensor"]

