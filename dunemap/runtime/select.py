"""Choosing the inference backend of a map: by name, or ``auto`` by measuring the candidates on the raster.

``auto`` times every installed candidate (:data:`dunemap.runtime.backends.BACKENDS`: torch in the
Predictor's precision always, the ONNX Runtime and OpenVINO exports in fp32, OpenVINO in bf16 where the CPU
computes it natively; int8 runs only when asked for by name, :func:`dunemap.runtime.backends.candidates`
says why) on one window of
the raster after a warm-up run, scores the class agreement of each with the fp32 torch model on that
window's valid pixels, keeps those at or above ``min_agreement`` and takes the fastest, counting the time
preparing its input takes (decoding for torch and most exports, copying codes for an export that decodes
them itself: :meth:`dunemap.runtime.backends.Samples.preparation`). Measuring costs
about :data:`MEASURED_WINDOWS` window passes plus the exports (cached after the first run), so a map of
fewer than :data:`AUTO_MIN_WINDOWS` windows cannot pay it back and runs with torch. A map keeps the seconds it
measured for the maps after it (:mod:`dunemap.runtime.timings`): those time nothing and check only the agreement of
the fastest kept backends on their own raster.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch

from dunemap.errors import DunemapError
from dunemap.registry import choose
from dunemap.runtime.backends import (
    BACKENDS,
    BackendChoice,
    Samples,
    argmax_agreement,
    build_exported,
    candidates,
    exported_path,
    fp32_reference,
    input_kind,
    measure,
    measure_apart,
    require_package,
    window_tensor,
)
from dunemap.runtime.engines import stream_count
from dunemap.runtime.predictor import Predictor
from dunemap.runtime.timings import Recorded, recall, remember, timing_key

log = logging.getLogger(__name__)

MEASURED_WINDOWS = 3 * 5 + 8  # warm-up + 2 timed passes of up to 5 candidates, plus up to 8 windows read
# a 2x faster backend saves half a pass per window: it breaks even after 2x the measured passes, gains after 4x
AUTO_MIN_WINDOWS = 4 * MEASURED_WINDOWS
# what auto does with the timings an earlier run on this machine kept (dunemap.runtime.timings): nothing (none),
# reuse them and keep its own when it measures (reuse), or measure every candidate and keep that (measure)
TIMINGS = ("none", "reuse", "measure")


def select_backend(predictor: Predictor, name: str, window: int, samples: Callable[[], Samples],
                   load_fp32: Callable[[], Predictor], *, planned_windows: int | None = None,
                   applicability: bool = False, min_agreement: float,
                   requested_precision: str = "auto", batch: int = 1, batch_per_stream: bool = True,
                   codes: bool = False, timings: str = "none") -> tuple[object, BackendChoice]:
    """The predictor a map runs with for backend ``name`` and the choice to record.

    ``predictor`` is the torch Predictor as loaded (its precision resolved); ``load_fp32`` loads the same
    checkpoint as a fp32 CPU Predictor (the exports' source and the reference of agreement) when
    ``predictor`` is not one; ``samples`` reads windows of the raster (called only when needed). ``auto``
    times each candidate on ``batch`` copies of the window a call, the batch the map will run (with
    ``batch_per_stream``, the automatic batch: ``batch`` for each stream of an OpenVINO export, as
    :func:`dunemap.mapping.predict.batch_size_for` gives it), and records seconds per window. ``codes``: the
    raster stores AEF int8 codes, which the backends that decode them themselves
    (:func:`~dunemap.runtime.backends.takes_codes`) are built for, and timed on. ``timings`` (:data:`TIMINGS`):
    whether ``auto`` reuses the seconds per window an earlier run on this machine measured with the same settings
    (:mod:`dunemap.runtime.timings`), checking agreement on this raster the fastest first, and keeps its own.
    """
    choose(dict.fromkeys(TIMINGS), timings, "timings")
    # OpenVINO compiles the windows one stream gets a call: the automatic batch's (0), or its share of ``batch``
    request = 0 if batch_per_stream else -(-batch // stream_count(torch.get_num_threads()))
    spec = choose(BACKENDS, name, "backend")
    torch_choice = BackendChoice("torch", predictor.precision, reason="asked for by name")
    if spec is not None and spec.engine == "torch":
        return predictor, torch_choice
    fallback = _fallback(predictor, name, applicability, planned_windows)
    if fallback is not None:
        log.info("backend %s: %s; mapping with torch", name, fallback)
        return predictor, BackendChoice("torch", predictor.precision, reason=fallback)
    if spec is not None:  # asked for by name: every failure is the user's to see
        require_package(name, asked=True)
        reference = fp32_reference(predictor, load_fp32)
        int8 = spec.precision == "int8"
        try:
            return _as_chosen(build_exported(reference, name, window, samples() if int8 else None, codes, request))
        except DunemapError:
            raise
        except Exception as exc:  # the exporter or the backend failed on this model
            raise DunemapError(f"--backend {name}: the model could not be run by {spec.engine}: "
                               f"{_one_line(exc)}; use --backend torch") from None
    return _auto(predictor, window, samples, load_fp32, min_agreement, requested_precision, batch, codes,
                 batch_per_stream, timings, request)


def _as_chosen(built) -> tuple[object, BackendChoice]:
    return built, built.choice


def _fallback(predictor: Predictor, name: str, applicability: bool, planned_windows: int | None) -> str | None:
    """Why backend ``name`` falls back to torch here, or None."""
    if predictor.device.type != "cpu":
        if name != "auto":
            raise DunemapError(f"--backend {name} runs on the CPU; the model is on {predictor.device}: "
                               "give --device cpu, or use --backend torch")
        return f"the model runs on {predictor.device}, the exports on the CPU"
    if not predictor.checkpoint_sha256:
        if name != "auto":
            raise DunemapError(f"--backend {name}: this model was not loaded from a checkpoint file, so its export "
                               "has no SHA-256 to be cached under; use --backend torch")
        return "the model was not loaded from a checkpoint file (no SHA-256 to cache its export under)"
    if applicability:
        return "the area of applicability needs the decoder's features, which only torch gives"
    if name == "auto" and planned_windows is not None and planned_windows < AUTO_MIN_WINDOWS:
        return (f"{planned_windows} windows are too few to repay measuring the backends "
                f"(it costs about {MEASURED_WINDOWS} window passes)")
    return None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _auto(predictor: Predictor, window: int, samples: Callable[[], Samples], load_fp32: Callable[[], Predictor],
          min_agreement: float, requested_precision: str, batch: int = 1,
          codes: bool = False, batch_per_stream: bool = True, timings: str = "none",
          request: int = 0) -> tuple[object, BackendChoice]:
    names = [n for n in candidates(requested_precision) if require_package(n, asked=False)]
    wanted = {BACKENDS[n].package for n in candidates(requested_precision)}
    missing = sorted(wanted - {BACKENDS[n].package for n in names})
    hint = f"{', '.join(missing)} not installed (pip install -e \".[fast]\" adds them)"
    if not names:  # nothing to measure against: the raster is not read
        reason = hint if wanted else f"precision {requested_precision} runs in torch only"
        log.info("backend auto: %s; mapping with torch", reason)
        return predictor, BackendChoice("torch", predictor.precision, reason=reason)
    if missing:
        log.info("backend auto: %s", hint)
    taken = samples()
    if not taken.windows:
        reason = f"{taken.source} has no window half valid to measure on"
        log.info("backend auto: %s; mapping with torch", reason)
        return predictor, BackendChoice("torch", predictor.precision, reason=reason)
    x, valid = window_tensor(taken.windows[0]), taken.valid[0]
    try:
        reference = fp32_reference(predictor, load_fp32)
    except DunemapError as exc:  # e.g. a published state_dict whose text file the predictor was given in memory
        log.info("backend auto: no fp32 model to export and compare with (%s); mapping with torch", exc)
        return predictor, BackendChoice("torch", predictor.precision, reason="no fp32 reference")
    truth = reference.predict(x).float()
    codes = codes and bool(taken.codes)

    def one(kind: str) -> torch.Tensor:  # the first window as a backend fed ``kind`` is given it
        return {"codes": lambda: torch.from_numpy(taken.codes[0])[None], "bf16": lambda: x.to(torch.bfloat16),
                "values": lambda: x}[kind]()

    def inputs(engine: str, kind: str) -> torch.Tensor:  # timed as the map runs it: ``batch`` windows a stream
        n = max(1, batch) * (stream_count(torch.get_num_threads(), engine) if batch_per_stream else 1)
        return one(kind).expand(n, -1, -1, -1).contiguous()

    key = None
    if timings != "none":
        key = timing_key(checkpoint=predictor.checkpoint_sha256, window=window, torch=predictor.precision, batch=batch,
                         batch_per_stream=batch_per_stream, threads=torch.get_num_threads(), codes=codes,
                         candidates=names)  # the streams follow from the threads and the runners' version
    if timings == "reuse":
        recorded = recall(key)
        if recorded is not None:
            reused = _reuse(recorded, predictor, reference, one, truth, valid, min_agreement, window, taken, codes,
                            request)
            if reused is not None:
                return reused

    xs = inputs("torch", "values")
    logits, seconds = measure(predictor, xs)
    prepare = taken.preparation()  # each candidate's time per window is its input's preparation plus the model's
    measured = [BackendChoice("torch", predictor.precision, argmax_agreement(logits[:1], truth, valid),
                              seconds / len(xs) + prepare.get("channels_last", 0.0))]
    runners = {"torch": predictor}
    groups: dict[tuple[str, str], list[str]] = {}  # one child per engine and input (precisions fed alike share one)
    for name in names:
        groups.setdefault((BACKENDS[name].engine, input_kind(name, codes)), []).append(name)
    for (engine, kind), group in groups.items():  # fp32 exports (candidates) timed in child processes: none stays
        try:  # in this one's memory; each is timed on the input it will be given
            path = exported_path(reference, group[0], window, kind == "codes")  # the fp32 export every precision runs
            xe = inputs(engine, kind)
            results = measure_apart(engine, path, xe, precisions=[BACKENDS[n].precision for n in group])
        except DunemapError:
            raise
        except Exception as exc:  # an export or a backend that fails on this model is left out
            results = {BACKENDS[n].precision: exc for n in group}
        for name in group:
            result = results[BACKENDS[name].precision]
            if isinstance(result, Exception):
                log.warning("backend auto: %s failed on this model (%s); left out", name, _one_line(result))
                continue
            raw, seconds = result
            logits = reference.calibrated(raw[:1]).float()
            measured.append(BackendChoice(engine, BACKENDS[name].precision, argmax_agreement(logits, truth, valid),
                                          seconds / len(xe) + prepare.get(kind, 0.0)))
    if key is not None:
        remember(key, {m.name: m.seconds for m in measured}, taken.source)
    faithful = [m for m in measured if m.agreement >= min_agreement]
    if not faithful:  # not even torch (bf16) agrees enough: the fp32 reference itself is exact
        faithful = [BackendChoice("torch", "fp32", 1.0, None)]
        runners["torch"] = reference
    best = min(faithful, key=lambda m: float("inf") if m.seconds is None else m.seconds)
    table = ", ".join(f"{m.name if m.engine != 'torch' else 'torch ' + m.precision} {m.seconds:.3f} s "
                      f"{m.agreement:.2%}" for m in measured)
    log.info("backend auto: chose %s (%s) on %s; measured per window (input and model): %s; kept agreement "
             ">= %.1f%%", best.name,
             best.precision, taken.source, table, 100 * min_agreement)
    chosen = BackendChoice(best.engine, best.precision, best.agreement, best.seconds,
                           f"fastest of {len(faithful)} at >= {min_agreement:.1%} agreement", best.calibration,
                           tuple((m.name, m.agreement, m.seconds) for m in measured))
    runner = runners.get(best.name)
    if best.engine != "torch":  # the one backend this process runs, from its cached export
        runner = build_exported(reference, best.name, window, taken, codes, request)
        runner.choice = chosen
    return runner, chosen


def _reuse(recorded: Recorded, predictor: Predictor, reference: Predictor, one: Callable[[str], torch.Tensor],
           truth: torch.Tensor, valid, min_agreement: float, window: int, taken: Samples,
           codes: bool, request: int = 0) -> tuple[object, BackendChoice] | None:
    """The fastest backend of ``recorded`` (an earlier run's timings on this machine) that classifies this raster's
    window as fp32 torch does on at least ``min_agreement`` of its pixels: each is built and run once on it, the
    fastest first, until one agrees (a faster one left behind is named in the log line). None where none agrees or
    one fails to run (logged): every candidate is then measured."""
    passed_over = []
    for name in recorded.ranked():
        spec = choose(BACKENDS, name, "backend")
        try:
            if spec.engine == "torch":
                runner = predictor
                logits = truth if predictor is reference else predictor.predict(one("values")).float()
            else:
                runner = build_exported(reference, name, window, taken, codes, request)
                logits = reference.calibrated(runner.raw_logits(one(input_kind(name, codes)))).float()
        except DunemapError:
            raise
        except Exception as exc:  # it ran when measured: a backend changed since is measured with the others
            log.warning("backend auto: %s, kept in %s, failed (%s); measuring every candidate", name, recorded.path,
                        _one_line(exc))
            return None
        agreement = argmax_agreement(logits, truth, valid)
        if agreement >= min_agreement:
            break
        passed_over.append(f"{name} {agreement:.2%}")
        runner = None  # released before the next is built
    else:
        log.info("backend auto: none of the backends kept in %s classifies %s's window as fp32 torch does on "
                 "%.1f%% of its pixels (%s); measuring every candidate", recorded.path, taken.source,
                 100 * min_agreement, ", ".join(passed_over))
        return None
    seconds = recorded.seconds[name]
    chosen = BackendChoice(spec.engine, spec.precision if spec.engine != "torch" else predictor.precision, agreement,
                           seconds, f"the fastest this machine measured ({recorded.when}) at >= {min_agreement:.1%} "
                           "agreement on this raster", measured=((name, agreement, seconds),))
    below = f"; faster, below it here: {', '.join(passed_over)}" if passed_over else ""
    log.info("backend auto: chose %s (%s) on %s, %.3f s per window as measured on this machine on %s (%s; "
             "--remeasure measures again); agreement %.2f%% on this raster >= %.1f%%%s", name, chosen.precision,
             taken.source, seconds, recorded.when, recorded.path, 100 * agreement, 100 * min_agreement, below)
    if runner is not predictor:
        runner.choice = chosen
    return runner, chosen


def cpu_fp32_loader(load: Callable[..., Predictor]) -> Callable[[], Predictor]:
    """A ``load_fp32`` for :func:`select_backend` from a loader taking ModelSpec overrides."""
    return lambda: load(device="cpu", precision="fp32")


__all__ = ["AUTO_MIN_WINDOWS", "MEASURED_WINDOWS", "TIMINGS", "cpu_fp32_loader", "select_backend"]


