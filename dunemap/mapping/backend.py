"""The inference backend of a map (``MapConfig.backend``): windows of the raster to measure and calibrate on,
and the choice made once per run (:func:`dunemap.runtime.select.select_backend`).

The windows are taken from evenly spaced blocks of the map's plan, so every process that samples the
same raster with the same settings gets the same windows (a Dask worker rebuilding an int8 export gets
the one the client chose).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Callable, Sequence

import numpy as np
import rasterio
import torch

from dunemap.errors import CheckpointError
from dunemap.mapping.config import MapConfig
from dunemap.mapping.engine import resolve_input
from dunemap.mapping.predict import GDAL_READ_CACHE_BYTES, window_batch
from dunemap.mapping.resume import JOURNAL_NAME
from dunemap.mapping.windows import plan_blocks
from dunemap.mapping.writer import partial_dir
from dunemap.raster.geometry import Box
from dunemap.raster.reader import BlockData, EmbeddingReader
from dunemap.raster.tags import BACKEND_PRECISION_TAG, BACKEND_TAG
from dunemap.runtime import ModelSpec, Predictor, load_predictor
from dunemap.runtime.backends import BackendChoice, Samples, backend_name
from dunemap.runtime.select import AUTO_MIN_WINDOWS, select_backend

log = logging.getLogger(__name__)

SAMPLE_WINDOWS = 8  # windows read to calibrate int8 exports; the first (the most valid) is also timed
SAMPLE_CANDIDATES = 32  # evenly spaced windows of the plan that are read to find them
MIN_VALID_SHARE = 0.5  # a window is a sample when at least this share of its pixels is data


def sample_windows(reader: EmbeddingReader, config: MapConfig) -> Samples:
    """Up to :data:`SAMPLE_WINDOWS` full windows of ``reader``'s raster that are at least half valid, the most
    valid first, from :data:`SAMPLE_CANDIDATES` windows evenly spaced over the map's plan (``config`` resolved)."""
    blocks = plan_blocks(reader.height, reader.width, config.window, config.stride,
                         config.resolved_block_size(reader.bands * (1 if reader.is_aef else 4)))

    def read(win: Box) -> BlockData:
        with rasterio.Env(GDAL_CACHEMAX=GDAL_READ_CACHE_BYTES):
            return reader.read(win)

    return _samples(blocks, config, read, str(reader.path))


def _samples(blocks, config: MapConfig, read: Callable[[Box], BlockData], source: str) -> Samples:
    windows = [w for i in range(len(blocks)) for w in blocks[i].windows if w.shape == (config.window, config.window)]
    picks = sorted({round(i * (len(windows) - 1) / (SAMPLE_CANDIDATES - 1)) for i in range(SAMPLE_CANDIDATES)})
    found = []
    for i in picks if windows else []:
        data = read(windows[i])
        valid = data.valid_in(windows[i])
        if valid.mean() >= MIN_VALID_SHARE:
            x = window_batch(data, [windows[i]], torch.float32)[0].contiguous().numpy()  # (C, h, w) float32
            found.append((float(valid.mean()), i, x, valid.copy()))
    found = sorted(found, key=lambda f: (-f[0], f[1]))[:SAMPLE_WINDOWS]
    return Samples(source, [f[2] for f in found], [f[3] for f in found])


def planned_windows(readers: list[EmbeddingReader], config: MapConfig) -> int:
    """Windows the maps of ``readers`` will predict (before skipping nodata)."""
    total = 0
    for r in readers:
        blocks = plan_blocks(r.height, r.width, config.window, config.stride,
                             config.resolved_block_size(r.bands * (1 if r.is_aef else 4)))
        total += sum(len(blocks[i].windows) for i in range(len(blocks)))
    return total


def choose_backend(predictor: Predictor, config: MapConfig, samples: Callable[[], Samples], planned: int,
                   model: ModelSpec | None = None, gpu_index: int = 0) -> tuple[object, BackendChoice]:
    """The predictor a run with ``config`` (resolved) predicts with, and the choice to record (logged once).

    ``samples`` reads windows of the (first) raster to map, ``planned`` is the run's window count; ``model``
    reloads the checkpoint as the fp32 CPU reference when ``predictor`` is not one (None: from the file the
    predictor was loaded from)."""

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
                          requested_precision=model.precision if model is not None else "auto")


def jobs_backend(predictor: Predictor, model: ModelSpec | None, config: MapConfig, jobs: Sequence,
                 gpu_index: int = 0) -> tuple[object, BackendChoice]:
    """:func:`choose_backend` for map jobs (:class:`dunemap.mapping.jobs.MapJob`), sampled on the first job's raster."""
    config = resumed_backend(jobs[0], config)
    if config.backend == "torch":
        return predictor, BackendChoice("torch", predictor.precision, reason="asked for by name")
    planned = 0
    for job in jobs:  # counted until auto's threshold is passed: a batch of many scenes opens few of them
        with job_reader(job, predictor.in_channels) as reader:
            planned += planned_windows([reader], config)
        if planned >= AUTO_MIN_WINDOWS:
            break
    with job_reader(jobs[0], predictor.in_channels) as reader:
        return choose_backend(predictor, config, lambda: sample_windows(reader, config), planned, model, gpu_index)


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
    blocks = plan_blocks(data.shape[1], data.shape[2], config.window, config.stride,
                         config.resolved_block_size(data.shape[0] * data.dtype.itemsize))

    def read(win: Box) -> BlockData:
        rows, cols = win.slices()
        return BlockData(win, data[:, rows, cols], valid[rows, cols])

    return _samples(blocks, config, read, source)


__all__ = ["MIN_VALID_SHARE", "SAMPLE_WINDOWS", "array_samples", "choose_backend", "job_reader", "jobs_backend",
           "planned_windows", "resumed_backend", "sample_windows"]
