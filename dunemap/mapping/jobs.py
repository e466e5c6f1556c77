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
from dunemap.mapping.backend import jobs_backend, release_freed_memory, resumed_backend
from dunemap.mapping.engine import MapResult, check_map_outputs, map_claimed
from dunemap.raster.tags import product_paths
from dunemap.raster.zones import ZoneView
from dunemap.runtime import ModelSpec, Predictor, load_predictor
from dunemap.runtime.backends import BackendChoice

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
    """Runs planned, checked jobs and returns their maps. One executor may run several batches in a row (the zones
    of a set, :func:`dunemap.mapping.batch.run_jobs`): it loads its model once and keeps ``auto``'s backend choice
    (:class:`KeptChoice`). Used as a context manager: leaving it closes what its runs opened."""

    model: ModelSpec

    def run(self, jobs: Sequence[MapJob], config: MapConfig) -> BatchMapResult: ...

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc: object) -> None: ...


@dataclass
class KeptChoice:
    """The backend ``auto`` measured in an executor's first batch that measured, reused by its later batches: a
    set's zones (one batch each) are measured once and record the same choice (agreement, seconds per window).
    A batch whose first map resumes an interrupted run keeps its journal's backend (:func:`resumed_backend`)."""

    config: MapConfig | None = None  # the resolved settings it was measured with
    runner: object = None  # what runs it: the predictor in this process, the workers' spec on a cluster
    choice: BackendChoice | None = None

    def reuse(self, config: MapConfig, job: MapJob) -> tuple[object, BackendChoice] | None:
        """The kept runner and choice for a batch with ``config`` whose first job is ``job``, or None."""
        if self.choice is None or config != self.config or resumed_backend(job, config) != config:
            return None
        log.info("backend auto: %s reuses the choice measured earlier in this run: %s", job.out,
                 self.choice.describe())
        return self.runner, self.choice

    def keep(self, config: MapConfig, runner: object, choice: BackendChoice) -> tuple[object, BackendChoice]:
        """``(runner, choice)``, kept for later batches when ``auto`` measured it."""
        if choice.measured and self.choice is None:
            self.config, self.runner, self.choice = config, runner, choice
        return runner, choice


class LocalExecutor:
    """Maps jobs one after another in this process with one model, loaded once for every batch it runs."""

    def __init__(self, model: ModelSpec) -> None:
        self.model = model
        self.predictor: Predictor | None = None
        self.loaded = False  # whether the model was loaded once: its training tile is known
        self.train_tile: int | None = None
        self.kept = KeptChoice()

    def _predictor(self) -> Predictor:
        if self.predictor is None:
            self.predictor = load_predictor(self.model)
            self.loaded = True
        return self.predictor

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def run(self, jobs: Sequence[MapJob], config: MapConfig) -> BatchMapResult:
        t0 = time.perf_counter()
        if not self.loaded:
            self.train_tile = self._predictor().train_tile
        config = config.for_model(self.train_tile)  # the windows the model was trained for
        kept = self.kept.reuse(config, jobs[0])
        if kept is None:  # once for every job
            kept = self.kept.keep(config, *jobs_backend(self._predictor(), self.model, config, jobs))
        runner, choice = kept
        if self.predictor is not None and runner is not self.predictor:
            # an exported backend runs from its export and a fp32 model of its own: the loaded model goes (loaded
            # again only for a later batch that must choose afresh), and so does what measuring the backends
            # freed, before the map allocates
            self.predictor = None
            release_freed_memory()
        maps = [map_claimed(list(job.sources), runner, job.out, config, job.view, choice) for job in jobs]
        return BatchMapResult(maps, time.perf_counter() - t0)


def check_job_outputs(jobs: Sequence[MapJob], config: MapConfig, inputs: Sequence[str | os.PathLike | None]) -> None:
    """:func:`dunemap.mapping.engine.check_map_outputs` for every job, its own sources and ``inputs`` as inputs."""
    for job in jobs:
        check_map_outputs(job.out, [*(s for s in job.sources if isinstance(s, Path)), *inputs], config)
