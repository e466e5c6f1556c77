"""The Dask executor of mapping: block tasks on workers, one writer on the client, many maps per job.

The unit of work is one block (:func:`dunemap.mapping.predict.predict_block`): a worker reads the
block's extent, runs the model on the windows the block owns and returns the block's contribution.
Each worker process loads the model once and keeps it. The client is the single writer: it submits
block tasks through a sliding window (at most ``max_in_flight`` tasks at a time, so memory stays
bounded on both sides), takes results as they complete and feeds each map's
:class:`~dunemap.mapping.assemble.MapAssembler`. The assembler finishes blocks in a fixed order, so
the maps are byte-identical to the single-process path whatever order tasks complete in. The journal
works as in the single-process path: blocks a map has already recorded are not submitted again.

Tasks are pure (the same block always gives the same bytes) and idempotent (they write nothing).
When a worker dies, the scheduler runs its tasks again on other workers. A task that was running on
more than ``allowed_failures`` dying workers (a poison block, usually one that does not fit in a
worker's memory) fails the run with a clear message.

Several inputs make one job. Each input (one raster, or the tiles of one grid mosaicked through a
VRT) becomes its own map. The blocks of all maps go through the same window, so the next map starts
while the last blocks of the previous one are still running and no worker waits between maps.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import torch

from dunemap.errors import CheckpointError, ConfigError, InputError
from dunemap.io.progress import progress_bar
from dunemap.mapping.assemble import MapAssembler
from dunemap.mapping.config import ClusterConfig, MapConfig
from dunemap.mapping.engine import (
    MapPlan,
    MapResult,
    applicability_threshold,
    labelled_legend,
    make_assembler,
    map_fingerprint,
    plan_map,
    predictor_fingerprint,
    resolve_input,
)
from dunemap.mapping.backend import jobs_backend, release_freed_memory, resumed_backend
from dunemap.mapping.jobs import BatchMapResult, KeptChoice, MapJob
from dunemap.mapping.predict import Contribution, batch_size_for, predict_block
from dunemap.mapping.profile import StageTimes
from dunemap.mapping.windows import Block
from dunemap.raster.reader import EmbeddingReader
from dunemap.raster.tags import BACKEND_PRECISION_TAG, BACKEND_TAG, SCENE_PRIOR_TAG, model_tags, source_tags
from dunemap.runtime import ModelSpec, Predictor, load_predictor
from dunemap.runtime.backends import BackendChoice
from dunemap.trust.prior import ScenePrior

if TYPE_CHECKING:
    from distributed import Client, Future

log = logging.getLogger(__name__)

LIMIT_REFRESH_SECONDS = 5.0  # how often the in-flight bound follows the cluster's size (workers come and go)


@dataclass(frozen=True)
class PredictorSpec:
    """How a worker loads the model. Files carry their mtimes, so a worker reloads a changed file."""

    model: ModelSpec  # absolute paths, the same on every worker (shared storage); the device is resolved there
    weights_mtime_ns: int
    text_mtime_ns: int | None = None
    catalog_mtime_ns: int | None = None
    torch_threads: int | None = None
    backend: str = "torch"  # the backend the client chose (dunemap.mapping.backend): every worker builds it
    calibration: MapJob | None = None  # the job whose raster calibrates an int8 backend (the same windows everywhere)

    @classmethod
    def from_files(cls, model: ModelSpec | str | os.PathLike, torch_threads: int | None = None,
                   **options) -> PredictorSpec:
        """The spec of ``model`` (a ModelSpec, or its weights with ``options``, ModelSpec fields), its files
        made absolute and checked."""
        model = ModelSpec.of(model, **options)
        w = Path(model.weights).absolute()
        if not w.is_file():
            raise CheckpointError(f"{model.weights}: checkpoint not found")
        text, text_mtime = None, None
        if model.text_embeddings is not None:
            t = Path(model.text_embeddings).absolute()
            if not t.is_file():
                raise InputError(f"text embeddings {model.text_embeddings}: file not found")
            text, text_mtime = str(t), t.stat().st_mtime_ns
        cat, cat_mtime = None, None
        if model.catalog is not None:
            c = Path(model.catalog).absolute()
            if not c.is_file():
                raise InputError(f"catalog {model.catalog}: file not found")
            cat, cat_mtime = str(c), c.stat().st_mtime_ns
        model = ModelSpec.of(model, weights=str(w), text_embeddings=text, catalog=cat)
        return cls(model, w.stat().st_mtime_ns, text_mtime, cat_mtime, torch_threads)


@dataclass(frozen=True)
class ModelInfo:
    """What the client needs to know about the workers' model. The client never loads the model."""

    fingerprint: str  # :func:`dunemap.mapping.engine.predictor_fingerprint` on the worker
    in_channels: int
    class_names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    device: str
    precision: str  # fp32 or bf16, as resolved on the worker
    applicability_threshold: float | None = None  # the model's DI threshold (None: no area of applicability)
    model_tags: tuple[tuple[str, str], ...] = ()  # provenance: dunemap.raster.tags.model_tags
    train_tile: int | None = None  # the model's training tile side: the default window (MapConfig.for_model)
    scene_prior: str | None = None  # the checkpoint's class shares of new ground, as JSON (dunemap.trust.prior)


# ---- worker side -------------------------------------------------------------------------------

_WORKER_MODELS: dict[PredictorSpec, Predictor] = {}  # one model per worker process, keyed by its spec
_WORKER_LOCK = threading.Lock()


def gpu_slot(worker_name: object, gpus: int) -> int:
    """The GPU a worker uses for device "auto" or "cuda" when it sees ``gpus`` of them.

    Workers named 0, 1, 2, ... (as LocalCluster names them) take the GPUs round-robin. Any other
    name, or a worker that sees at most one GPU (dask-cuda and batch schedulers set
    CUDA_VISIBLE_DEVICES to one GPU per worker), uses GPU 0.
    """
    if gpus < 2 or isinstance(worker_name, bool):
        return 0
    try:
        return int(str(worker_name)) % gpus
    except ValueError:
        return 0


def _worker_name() -> object:
    from distributed import get_worker

    try:
        return get_worker().name
    except ValueError:  # not inside a Dask worker (called directly)
        return None


def worker_predictor(spec: PredictorSpec, config: MapConfig | None = None) -> Predictor:
    """This process's model for ``spec``: loaded on first use, then kept. A new spec replaces the old model.
    With ``config`` (resolved) and a backend other than torch in ``spec``, the model runs through that backend
    (its export loaded from this machine's cache, or made there)."""
    key = (spec, None if config is None or spec.backend == "torch" else config.window)
    with _WORKER_LOCK:
        predictor = _WORKER_MODELS.get(key)
        if predictor is None:
            _WORKER_MODELS.clear()
            if spec.torch_threads is not None:
                torch.set_num_threads(spec.torch_threads)
            gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
            predictor = load_predictor(spec.model, gpu_index=gpu_slot(_worker_name(), gpus))
            if key[1] is not None:  # an export: the loaded model is dropped (unless it is the export's fp32 base)
                predictor = _backend(predictor, spec, replace(config, backend=spec.backend))[0]
                release_freed_memory()  # and what it and measuring freed goes back to the OS, as in one process
            _WORKER_MODELS[key] = predictor
            log.info("loaded %s on %s (%s)", spec.model.weights, predictor.device, predictor.precision)
        return predictor


def describe_model(spec: PredictorSpec) -> ModelInfo:
    """Task: load the model on a worker and report what the client needs (fingerprint, bands, legend)."""
    p = worker_predictor(spec)
    return ModelInfo(predictor_fingerprint(p), int(p.in_channels), tuple(p.class_names),
                     tuple(tuple(int(v) for v in c) for c in p.colors), str(p.device), p.precision,
                     applicability_threshold(p), tuple(model_tags(p).items()), p.train_tile,
                     None if p.scene_prior is None else json.dumps(p.scene_prior.to_dict()))


def _backend(predictor: Predictor, spec: PredictorSpec, config: MapConfig) -> tuple[object, BackendChoice]:
    return jobs_backend(predictor, spec.model, config, [spec.calibration])


def choose_backend_task(spec: PredictorSpec, config: MapConfig) -> BackendChoice:
    """Task: choose the backend on one worker (``auto`` measures there), for the client to ship to all."""
    return _backend(worker_predictor(spec), spec, config)[1]


def predict_block_task(spec: PredictorSpec, reader: EmbeddingReader, block: Block, config: MapConfig) -> Contribution:
    """Task: one block on a worker. It is pure (the same block gives the same bytes) and writes nothing."""
    predictor = worker_predictor(spec, config)
    if predictor.scene_prior is not None:  # the cached model serves every job: a copy holds this raster's ground
        predictor = copy.copy(predictor)
        predictor.use_ground(reader.crs, reader.bounds)
    try:
        return predict_block(reader, predictor, block, config, batch_size_for(predictor, config))
    finally:
        reader.close()


# ---- client side -------------------------------------------------------------------------------


@contextlib.contextmanager
def open_client(cluster: ClusterConfig) -> Iterator[Client]:
    """A Dask client for ``cluster``. A LocalCluster is started for ``workers``, and both are closed on exit."""
    from distributed import Client, LocalCluster

    cluster.validate()
    if not cluster.enabled:
        raise ConfigError("no Dask cluster configured; set --workers N or --scheduler ADDRESS")
    with contextlib.ExitStack() as stack:
        if cluster.scheduler is not None:
            try:
                client = Client(cluster.scheduler, timeout=cluster.connect_timeout, set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise ConfigError(f"--scheduler {cluster.scheduler}: cannot connect to a Dask scheduler "
                                  f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
            stack.enter_context(client)
        else:
            local = stack.enter_context(LocalCluster(
                n_workers=cluster.workers, threads_per_worker=1, processes=True,
                dashboard_address=cluster.dashboard_address, memory_limit=cluster.memory_limit,
                scheduler_kwargs={"allowed_failures": cluster.allowed_failures}, silence_logs=logging.WARNING,
            ))
            client = stack.enter_context(Client(local, set_as_default=False))
        log.info("Dask scheduler %s, %d worker(s) now, dashboard %s", client.scheduler.address,
                 len(client.nthreads()), dashboard_link(client) or "off")
        yield client


def dashboard_link(client: Client) -> str | None:
    """The scheduler's dashboard address, or None when it has no dashboard."""
    if "dashboard" not in client.scheduler_info().get("services", {}):
        return None
    return client.dashboard_link


@dataclass
class _MapRun:
    """One job's map on the client: its reader (shipped to workers), plan and assembler, and counters."""

    job: MapJob
    sources: list[Path]
    reader: EmbeddingReader
    plan: MapPlan
    assembler: MapAssembler
    token: str  # part of the task keys: unique to this map in this session
    outstanding: int = 0  # blocks submitted or still to submit, not yet assembled
    resumed: int = 0
    predicted: int = 0
    skipped: int = 0
    started: float = 0.0
    times: StageTimes = field(default_factory=StageTimes)  # workers' stages from their contributions, the client's own
    backend: dict[str, str] = field(default_factory=dict)  # the backend's tags (MapResult.backend)
    result: MapResult | None = None


class _ClusterMapper:
    """The client's loop: submit block tasks through a sliding window and assemble their results in order."""

    def __init__(self, client: Client, spec: PredictorSpec, config: MapConfig, cluster: ClusterConfig) -> None:
        self.client = client
        self.spec = spec
        self.config = config
        self.cluster = cluster
        self._threads = 0
        self._threads_at = -float("inf")
        self.tasks = 0
        self.assemble_seconds = 0.0
        self.session = uuid.uuid4().hex[:12]  # task keys never collide with an earlier (e.g. cancelled) session

    def in_flight_limit(self) -> int:
        if self.cluster.max_in_flight:
            return self.cluster.max_in_flight
        now = time.monotonic()
        if now - self._threads_at > LIMIT_REFRESH_SECONDS:
            self._threads = sum(self.client.nthreads().values())
            self._threads_at = now
        return max(4, 2 * self._threads)

    def describe(self) -> ModelInfo:
        future = self.client.submit(describe_model, self.spec, key=f"dunemap-describe-{self.session}")
        try:
            return future.result()
        finally:
            future.release()

    def choose_backend(self, jobs: Sequence[MapJob]) -> tuple[PredictorSpec, BackendChoice]:
        """The backend of every block task, chosen once on one worker on the first job's raster and shipped in
        the spec (:mod:`dunemap.mapping.backend`): the spec and the choice."""
        first = jobs[0]  # its paths made absolute: a worker opens them
        self.spec = replace(self.spec, calibration=replace(first, sources=tuple(resolve_input(list(first.sources),
                                                                                                first.out)[1])))
        self.config = resumed_backend(jobs[0], self.config)
        if self.config.backend == "torch":
            return self.spec, BackendChoice("torch", "model", reason="asked for by name")
        future = self.client.submit(choose_backend_task, self.spec, self.config,
                                    key=f"dunemap-backend-{self.session}")
        try:
            choice = future.result()
        finally:
            future.release()
        self.spec = replace(self.spec, backend=choice.name)
        log.info("backend on the workers: %s", choice.describe())
        return self.spec, choice

    def prepare(self, index: int, job: MapJob, info: ModelInfo, choice: BackendChoice | None = None) -> _MapRun:
        """Check the inputs of job number ``index`` and plan its map. Nothing is written."""
        sources, path = resolve_input(list(job.sources), job.out)
        reader = EmbeddingReader(path, bands=info.in_channels, view=job.view)  # absolute paths: workers open them too
        plan = plan_map(reader, self.config)
        tags, model = {**dict(info.model_tags), **source_tags(sources)}, info.fingerprint
        prior = None if info.scene_prior is None else ScenePrior.from_dict(json.loads(info.scene_prior))
        if prior is not None and prior.covers(reader.crs, reader.bounds):  # as the workers decide (use_ground)
            tags[SCENE_PRIOR_TAG], model = prior.describe(), f"{model}+scene-prior"
        measured = {} if choice is None else {k: v for k, v in choice.tags().items()
                                              if k not in (BACKEND_TAG, BACKEND_PRECISION_TAG)}
        precision = info.precision
        if choice is not None and choice.engine != "torch":  # the workers run the export the client chose
            precision = choice.precision
            tags[BACKEND_TAG], tags[BACKEND_PRECISION_TAG] = choice.engine, precision
            model = f"{model}+{choice.name}-{choice.calibration}"
        fingerprint = map_fingerprint(sources, plan, model, self.config, job.view)
        legend = labelled_legend(info.class_names, info.colors)
        assembler = make_assembler(job.out, plan, legend, self.config, fingerprint, precision,
                                   info.applicability_threshold, tags, measured)
        run_backend = {k: tags[k] for k in (BACKEND_TAG, BACKEND_PRECISION_TAG)} | measured
        run = _MapRun(job, sources, reader, plan, assembler, f"{self.session}-{index}")
        run.backend = run_backend
        return run

    def _blocks(self, runs: Sequence[_MapRun], bar) -> Iterator[tuple[_MapRun, Block]]:
        """Blocks to submit, map after map. A map is opened (or resumed) when its first block is due."""
        for run in runs:
            run.started = time.perf_counter()
            run.resumed = run.assembler.open(self.config.resume)
            todo = run.assembler.pending()
            bar.update(run.plan.blocks.window_count() - todo.window_count())
            run.outstanding = len(todo)
            if not todo:
                self._finish(run)
            yield from ((run, block) for block in todo)

    def _finish(self, run: _MapRun) -> None:
        with run.times.timed("write"):
            products = run.assembler.finalize()
        run.reader.close()
        run.result = MapResult.build(run.job.out, run.plan, products, self.config, run.started, run.resumed,
                                     run.predicted, run.skipped, run.times, run.backend)
        log.debug("finished %s in %.1f s", run.job.out, run.result.seconds)

    def run(self, runs: Sequence[_MapRun]) -> None:
        from distributed import as_completed
        from distributed.scheduler import KilledWorker

        total = sum(run.plan.blocks.window_count() for run in runs)  # the bar counts windows
        futures: dict[str, tuple[Future, _MapRun, Block]] = {}
        done = as_completed(loop=self.client.loop)
        with progress_bar(total=total, unit="window", desc="map", enabled=self.config.progress) as bar:
            queue = self._blocks(runs, bar)

            def fill() -> None:
                while len(futures) < self.in_flight_limit():
                    item = next(queue, None)
                    if item is None:
                        return
                    run, block = item
                    future = self.client.submit(predict_block_task, self.spec, run.reader, block, self.config,
                                                key=f"dunemap-block-{run.token}-{block.index}")
                    futures[future.key] = (future, run, block)
                    done.add(future)

            try:
                fill()
                for future in done:
                    _, run, block = futures.pop(future.key)
                    t0 = time.perf_counter()
                    try:
                        contribution = future.result()
                    except KilledWorker:
                        raise ConfigError(
                            f"{run.job.out}: the task of block {block.index} was running on workers that died "
                            "too often (Dask allowed-failures); a block probably does not fit in a worker's "
                            "memory: lower --block-size or give the workers more memory"
                        ) from None
                    future.release()
                    run.times.add(contribution.seconds)
                    with run.times.timed("assemble"):
                        run.assembler.add(contribution)
                    self.assemble_seconds += time.perf_counter() - t0
                    run.predicted += contribution.windows_predicted
                    run.skipped += contribution.windows_skipped
                    run.outstanding -= 1
                    self.tasks += 1
                    del contribution
                    bar.update(len(block.windows))
                    if run.outstanding == 0:
                        self._finish(run)
                    fill()
            finally:
                if futures:  # a failure: stop the remaining tasks; journals keep what was assembled
                    self.client.cancel([f for f, _, _ in futures.values()])


class DaskExecutor:
    """Runs the blocks of every job as tasks on a Dask cluster; this process is each map's single writer.

    The blocks run on ``client`` when one is given (it stays open), else on a cluster opened at the first
    batch and closed when the executor is left. The model is loaded on the workers only; every map is
    planned before any output is written.
    """

    def __init__(self, model: ModelSpec, cluster: ClusterConfig, client: Client | None = None) -> None:
        self.model, self.spec = model, PredictorSpec.from_files(model, cluster.torch_threads)
        self.cluster, self.client, self.info = cluster, client, None
        self.kept, self.opened = KeptChoice(), contextlib.ExitStack()

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.opened.close()

    def run(self, jobs: Sequence[MapJob], config: MapConfig) -> BatchMapResult:
        t0 = time.perf_counter()
        client = self.client = self.client or self.opened.enter_context(open_client(self.cluster))
        mapper = _ClusterMapper(client, self.spec, config, self.cluster)
        info = self.info = self.info or mapper.describe()
        mapper.config = config = config.for_model(info.train_tile)  # the windows the model was trained for
        log.info("model on the workers: %d bands, %d classes, %s", info.in_channels, len(info.class_names),
                 info.device)
        mapper.spec, choice = self.kept.reuse(config, jobs[0]) or self.kept.keep(config, *mapper.choose_backend(jobs))
        runs = [mapper.prepare(i, job, info, choice) for i, job in enumerate(jobs)]
        try:
            mapper.run(runs)
        finally:
            for run in runs:
                run.reader.close()
        return BatchMapResult(
            maps=[run.result for run in runs if run.result is not None], seconds=time.perf_counter() - t0,
            tasks=mapper.tasks, assemble_seconds=mapper.assemble_seconds, workers=len(client.nthreads()),
            scheduler=client.scheduler.address, dashboard=dashboard_link(client),
        )
