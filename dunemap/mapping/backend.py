"""The inference backend of a map (``MapConfig.backend``): windows of the raster to measure and calibrate on,
and the choice made once per run (:func:`dunemap.runtime.select.select_backend`).

The windows are taken from evenly spaced blocks of the map's plan, so every process that samples the
same raster with the same settings gets the same windows (a Dask worker rebuilding an int8 export gets
the one the client chose).
"""

from __future__ import annotations

import ctypes
import gc
import json
import logging
from dataclasses import replace
from functools import partial
from typing import Callable, Sequence

import numpy as np
import torch

from dunemap.errors import CheckpointError
from dunemap.mapping.config import MapConfig
from dunemap.mapping.engine import resolve_input
from dunemap.mapping.decode import window_batch, window_codes
from dunemap.mapping.predict import batch_size_for, direct_reads, read_env
from dunemap.mapping.resume import JOURNAL_NAME
from dunemap.mapping.writer import partial_dir
from dunemap.raster.geometry import Box, window_starts
from dunemap.raster.reader import BlockData, EmbeddingReader
from dunemap.raster.tags import BACKEND_PRECISION_TAG, BACKEND_TAG
from dunemap.runtime import ModelSpec, Predictor, load_predictor
from dunemap.runtime.backends import BackendChoice, Samples, backend_name
from dunemap.runtime.engines import best_time
from dunemap.runtime.select import AUTO_MIN_WINDOWS, select_backend

log = logging.getLogger(__name__)

SAMPLE_WINDOWS = 8  # windows kept to calibrate int8 exports; other backends keep the most valid one, to time it
SAMPLE_CANDIDATES = 32  # evenly spaced windows of the plan that are read to find them
MIN_VALID_SHARE = 0.5  # a window is a sample when at least this share of its pixels is data


def sample_windows(reader: EmbeddingReader, config: MapConfig) -> Samples:
    """Up to :data:`SAMPLE_WINDOWS` (an int8 backend; 1 for others) full windows of ``reader``'s raster that are
    at least half valid, the most valid first (the earlier on a tie), from :data:`SAMPLE_CANDIDATES` of the map's
    windows evenly spaced in row-major order (``config`` resolved); only those windows are read, whatever the
    raster's size, and the reading stops once as many windows as are kept are entirely valid: none read after
    them could take their place."""

    direct = direct_reads(reader)

    def read(win: Box) -> BlockData:
        with read_env(direct=direct):  # as a map reads its blocks
            return reader.read(win)

    return _samples(reader.height, reader.width, config, read, str(reader.path))


def _samples(height: int, width: int, config: MapConfig, read: Callable[[Box], BlockData], source: str) -> Samples:
    rows = window_starts(height, config.window, config.stride)
    cols = window_starts(width, config.window, config.stride)
    if height < config.window or width < config.window:
        return Samples(source)  # no full window: the exports never run on this raster
    n = len(rows) * len(cols)
    picks = sorted({round(i * (n - 1) / (SAMPLE_CANDIDATES - 1)) for i in range(SAMPLE_CANDIDATES)})
    keep = SAMPLE_WINDOWS if config.backend.endswith("-int8") else 1  # auto times and scores the first only
    found = []
    timer = None
    for i in picks:
        win = Box(rows[i // len(cols)], cols[i % len(cols)], config.window, config.window)
        data = read(win)
        valid = data.valid_in(win)
        if valid.mean() >= MIN_VALID_SHARE:
            x = window_batch(data, [win], torch.float32)[0].contiguous().numpy()  # (C, h, w) float32
            codes = window_codes(data, [win], channels_last=False)[0].numpy() if data.data.dtype == np.int8 else None
            timer = timer or partial(input_seconds, data, win)  # timed only if the backends are measured
            found.append((float(valid.mean()), i, x, valid.copy(), codes))
            found = sorted(found, key=lambda f: (-f[0], f[1]))[:keep]  # the best so far: memory bounded
        del data  # its block, before the next is read
        if len(found) == keep and found[-1][0] == 1.0:  # later windows tie at best and lose on their place
            break
    return Samples(source, [f[2] for f in found], [f[3] for f in found], [f[4] for f in found if f[4] is not None],
                   timer=timer)


def input_seconds(data: BlockData, win: Box, repeats: int = 3) -> dict[str, float]:
    """Seconds (best of ``repeats``) that preparing window ``win`` of ``data`` takes for each kind of model input:
    ``channels_last`` (torch), ``values`` and ``bf16`` (the exports: float32 or bf16, band-interleaved,
    :func:`~dunemap.runtime.backends.input_kind`) and, from AEF codes, ``codes`` (an export that decodes them
    itself). ``auto`` adds them to each candidate's time: the model's threads use every core, so the mapping's
    decoding thread takes its time from the model (:func:`decoded_batches`)."""
    kinds = {"channels_last": lambda: window_batch(data, [win], torch.float32),
             "values": lambda: window_batch(data, [win], torch.float32, channels_last=False),
             "bf16": lambda: window_batch(data, [win], torch.bfloat16, channels_last=False)}
    if data.data.dtype == np.int8:
        kinds["codes"] = lambda: window_codes(data, [win], channels_last=False)
    return {kind: best_time(lambda _: prepare(), None, repeats)[1] for kind, prepare in kinds.items()}


def planned_windows(height: int, width: int, config: MapConfig) -> int:
    """Windows a map of ``height`` x ``width`` pixels predicts (before skipping nodata), counted without a plan."""
    return len(window_starts(height, config.window, config.stride)) * len(window_starts(width, config.window,
                                                                                          config.stride))


def choose_backend(predictor: Predictor, config: MapConfig, samples: Callable[[], Samples], planned: int,
                   model: ModelSpec | None = None, gpu_index: int = 0,
                   codes: bool = False) -> tuple[object, BackendChoice]:
    """The predictor a run with ``config`` (resolved) predicts with, and the choice to record (logged once).

    ``samples`` reads windows of the (first) raster to map, ``planned`` is the run's window count; ``model``
    reloads the checkpoint as the fp32 CPU reference when ``predictor`` is not one (None: from the file the
    predictor was loaded from); ``codes``: the raster stores AEF int8 codes (a backend that decodes them itself
    is built to take them)."""

    def load_fp32() -> Predictor:
        if model is not None:
            return load_predictor(replace(model, device="cpu", precision="fp32"), gpu_index=gpu_index)
        if predictor.path is None:
            raise CheckpointError("the predictor was not loaded from a file: no fp32 model to export")
        reference = load_predictor(ModelSpec(predictor.path, device="cpu", precision="fp32"))
        mine, theirs = (getattr(p.model, "text_embeddings", None) for p in (predictor, reference))
        if (mine is None) != (theirs is None) or (mine is not None and not torch.equal(mine.float(), theirs.float())):
            raise CheckpointError(f"{predictor.path}: the predictor's class text is not the file's own; load it "
                                  "with precision fp32 on the CPU to run it through another backend")
        return reference

    return select_backend(predictor, config.backend, config.window, samples, load_fp32, planned_windows=planned,
                          applicability=config.applicability, min_agreement=config.backend_agreement,
                          requested_precision=model.precision if model is not None else "auto",
                          batch=batch_size_for(predictor, config), batch_per_stream=not config.batch_size,
                          codes=codes, timings="measure" if config.remeasure else "reuse")


def jobs_backend(predictor: Predictor, model: ModelSpec | None, config: MapConfig, jobs: Sequence,
                 gpu_index: int = 0) -> tuple[object, BackendChoice]:
    """:func:`choose_backend` for map jobs (:class:`dunemap.mapping.jobs.MapJob`), sampled on the first job's raster."""
    config = resumed_backend(jobs[0], config)
    if config.backend == "torch":
        return predictor, BackendChoice("torch", predictor.precision, reason="asked for by name")
    planned = 0
    for job in jobs:  # counted until auto's threshold is passed: a batch of many scenes opens few of them
        with job_reader(job, predictor.in_channels) as reader:
            planned += planned_windows(reader.height, reader.width, config)
        if planned >= AUTO_MIN_WINDOWS:
            break
    with job_reader(jobs[0], predictor.in_channels) as reader:
        return choose_backend(predictor, config, lambda: sample_windows(reader, config), planned, model, gpu_index,
                              codes=reader.is_aef)


def release_freed_memory() -> bool:
    """Hand the memory freed since the backend was chosen back to the OS; whether the C library could be asked.

    Measuring reads windows of the raster (and GDAL's blocks of them) and runs torch on one, in fp32 and in
    the map's precision. Freed, that memory stays in glibc's heap, which returns only its top: the mapping
    process would keep its pages (a third of a GiB for a MiT-b2 at 512 px) while its own threads allocate
    afresh beside them. ``malloc_trim`` releases every free page; other C libraries have no such call."""
    gc.collect()
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, musl, Windows)
        return False
    trim(0)
    return True


def resumed_backend(job, config: MapConfig) -> MapConfig:
    """``config`` with backend ``auto`` replaced by the backend of the interrupted run of ``job``'s map that this run
    resumes (its journal's tags), so that measuring again cannot pick another and discard the finished blocks."""
    if config.backend != "auto" or not config.resume:
        return config
    try:
        tags = json.loads((partial_dir(job.out) / JOURNAL_NAME).read_text())["fingerprint"]["tags"]
        name = backend_name(tags[BACKEND_TAG], tags[BACKEND_PRECISION_TAG])
    except (OSError, ValueError, KeyError, TypeError):  # no journal, or one without a backend: choose afresh
        return config
    log.info("backend auto: %s resumes an interrupted run that used %s; using it again", job.out, name)
    return replace(config, backend=name)


def job_reader(job, bands: int) -> EmbeddingReader:
    """The reader of a map job's raster, as the map will open it."""
    _, path = resolve_input(list(job.sources), job.out)
    return EmbeddingReader(path, bands=bands, view=job.view)


def array_samples(data: np.ndarray, valid: np.ndarray, config: MapConfig, source: str = "the array") -> Samples:
    """:func:`sample_windows` of an in-memory (C, H, W) array as the reader stores it (``dunemap.predict_array``)."""

    def read(win: Box) -> BlockData:
        rows, cols = win.slices()
        return BlockData(win, data[:, rows, cols], valid[rows, cols])

    return _samples(data.shape[1], data.shape[2], config, read, source)


__all__ = ["MIN_VALID_SHARE", "SAMPLE_WINDOWS", "array_samples", "choose_backend", "input_seconds", "job_reader",
           "jobs_backend",
           "planned_windows", "release_freed_memory", "resumed_backend", "sample_windows"]
