"""The mapping front door: expand the inputs, plan the jobs (one map each) and hand them to an executor.

``dunemap map`` and the library enter here (:func:`map_inputs`, :func:`map_many`). The outputs of
every job are locked and checked against the output policy before anything is written; then the
jobs go to one executor: :class:`LocalExecutor` maps them one after another in this process
(:func:`dunemap.mapping.engine.map_raster`, one model for all), :class:`dunemap.mapping.distributed.DaskExecutor`
runs their blocks as tasks on a Dask cluster with this process as the single writer. Both give the
same bytes, and both build each map's :class:`~dunemap.mapping.engine.MapResult` with
:meth:`MapResult.build <dunemap.mapping.engine.MapResult.build>`.
"""

from __future__ import annotations

import glob
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

from dunemap.errors import ConfigError, InputError
from dunemap.mapping.config import MapConfig
from dunemap.mapping.backend import jobs_backend, release_freed_memory
from dunemap.mapping.engine import MapResult, check_map_outputs, map_claimed
from dunemap.raster.tags import product_paths
from dunemap.raster.zones import ZoneView
from dunemap.runtime import ModelSpec, load_predictor

log = logging.getLogger(__name__)

GLOB_CHARACTERS = "*?["


@dataclass(frozen=True)
class MapJob:
    """One output map: a single raster, or tiles of one grid mosaicked on the fly (``view``: one zone of a set)."""

    sources: tuple[Path | str, ...]  # local paths, or GDAL network paths (/vsicurl/...) as text
    out: Path
    view: ZoneView | None = None  # the part of a zone a zone set maps (dunemap.raster.zones)


def expand_inputs(patterns: Sequence[str | os.PathLike]) -> list[Path]:
    """Expand the input paths and patterns, in order and without duplicates.

    A pattern is quoted on the command line so that the shell leaves it alone, for example
    ``'scenes/*.tif'``. Matches of a pattern come in sorted order. A path that exists is used as
    given.
    """
    paths: list[Path] = []
    for pattern in patterns:
        text = os.fspath(pattern)
        if Path(text).exists() or not any(ch in text for ch in GLOB_CHARACTERS):
            paths.append(Path(text))
            continue
        matches = sorted(glob.glob(text, recursive=True))
        if not matches:
            raise InputError(f"{text}: no file matches this pattern")
        paths.extend(Path(m) for m in matches)
    seen: set[Path] = set()
    unique = []
    for p in paths:
        key = p.absolute()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def plan_jobs(inputs: Sequence[Path], out: str | os.PathLike | None = None,
              out_dir: str | os.PathLike | None = None) -> list[MapJob]:
    """With ``out``, one map of all ``inputs`` (tiles of one grid). With ``out_dir``, one map per input at
    ``OUT_DIR/<stem>_classes.tif``."""
    if (out is None) == (out_dir is None):
        raise ConfigError("give exactly one of --out (one map; several inputs are tiles of one mosaic) "
                          "or --out-dir (one map per input)")
    if not inputs:
        raise InputError("no input raster given")
    if out is not None:
        return [MapJob(tuple(Path(p) for p in inputs), Path(out))]
    jobs = [MapJob((Path(p),), Path(out_dir) / f"{Path(p).stem}_classes.tif") for p in inputs]
    made = {path.absolute(): job for job in jobs for path in product_paths(job.out).values()}
    kept = [job for job in jobs if made.get(job.sources[0].absolute(), job) is job]
    for job in jobs:  # e.g. 'scenes/*.tif' --out-dir scenes, run again: the first run's maps match the pattern
        if job not in kept:
            log.warning("%s: left out of the inputs: it is a product of the map of %s in this run", job.sources[0],
                        made[job.sources[0].absolute()].sources[0])
    check_distinct_outputs(kept)
    return kept


def check_distinct_outputs(jobs: Sequence[MapJob]) -> None:
    owner: dict[Path, MapJob] = {}
    for job in jobs:
        key = job.out.absolute()
        if key in owner:
            raise InputError(f"{owner[key].sources[0]} and {job.sources[0]} would both be mapped to {job.out}; "
                             "rename one of them or map them in separate runs")
        owner[key] = job


@dataclass
class BatchMapResult:
    """The maps of one job and how the job ran."""

    maps: list[MapResult]
    seconds: float
    tasks: int = 0  # block tasks run on the cluster (blocks resumed from journals are not run again)
    assemble_seconds: float = 0.0  # client time spent receiving and assembling results: the single writer's load
    workers: int = 0  # Dask workers at the end of the job; 0 = mapped in this process
    scheduler: str | None = None
    dashboard: str | None = None

    def summary(self) -> str:
        lines = [m.summary() for m in self.maps]
        if self.scheduler is not None:
            dash = f", dashboard {self.dashboard}" if self.dashboard else ""
            lines.append(f"{len(self.maps)} map(s), {self.tasks} block tasks on {self.workers} Dask worker(s) in "
                         f"{self.seconds:.1f} s, {self.assemble_seconds:.1f} s of it assembling on the client "
                         f"(scheduler {self.scheduler}{dash})")
        elif len(self.maps) > 1:
            lines.append(f"{len(self.maps)} maps in {self.seconds:.1f} s")
        return "\n".join(lines)


class Executor(Protocol):
    """Runs planned, checked jobs and returns their maps."""

    def run(self, jobs: Sequence[MapJob], config: MapConfig) -> BatchMapResult: ...


class LocalExecutor:
    """Maps jobs one after another in this process with one model (loaded once)."""

    def __init__(self, model: ModelSpec) -> None:
        self.model = model

    def run(self, jobs: Sequence[MapJob], config: MapConfig) -> BatchMapResult:
        t0 = time.perf_counter()
        predictor = load_predictor(self.model)
        config = config.for_model(predictor.train_tile)  # the windows the model was trained for
        runner, choice = jobs_backend(predictor, self.model, config, jobs)  # once for every job
        del predictor  # an exported backend runs from its export and a fp32 model of its own: this one goes
        release_freed_memory()  # and so does what measuring the backends freed, before the map allocates
        maps = [map_claimed(list(job.sources), runner, job.out, config, job.view, choice) for job in jobs]
        return BatchMapResult(maps, time.perf_counter() - t0)


def check_job_outputs(jobs: Sequence[MapJob], config: MapConfig, inputs: Sequence[str | os.PathLike | None]) -> None:
    """:func:`dunemap.mapping.engine.check_map_outputs` for every job, its own sources and ``inputs`` as inputs."""
    for job in jobs:
        check_map_outputs(job.out, [*(s for s in job.sources if isinstance(s, Path)), *inputs], config)
