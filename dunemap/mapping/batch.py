"""Run many map jobs: in this process one after another, or as block tasks on a Dask cluster.

The job model (inputs, outputs, results, the in-process executor) is :mod:`dunemap.mapping.jobs`; the
Dask executor is :mod:`dunemap.mapping.distributed`. This module chooses between them and applies the
output policy to every job under its lock before any work.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Sequence

from dunemap.errors import InputError
from dunemap.io.outputs import locked_outputs
from dunemap.mapping.config import ClusterConfig, MapConfig
from dunemap.mapping.distributed import DaskExecutor
from dunemap.mapping.jobs import (
    BatchMapResult,
    Executor,
    LocalExecutor,
    MapJob,
    check_distinct_outputs,
    check_job_outputs,
    expand_inputs,
    plan_jobs,
)
from dunemap.raster.tags import product_paths
from dunemap.runtime import ModelSpec

if TYPE_CHECKING:
    from distributed import Client


def map_many(
    jobs: Sequence[MapJob],
    model: ModelSpec | str | os.PathLike,
    config: MapConfig | None = None,
    cluster: ClusterConfig | None = None,
    client: Client | None = None,
    **options,
) -> BatchMapResult:
    """Map every job with ``model`` (a ModelSpec, or its weights with ``options``, ModelSpec fields), on a
    Dask cluster or one after another in this process.

    The blocks run on ``client`` when one is given (it stays open), else on the cluster that
    ``cluster`` describes. Without either, the jobs run in this process. On a cluster, the inputs are
    checked and every map is planned before any output is written. A job that is run again with the
    same arguments resumes each map from its journal.
    """
    with executor_for(model, cluster, client, **options) as executor:
        return run_jobs(jobs, executor, config)


def executor_for(model: ModelSpec | str | os.PathLike, cluster: ClusterConfig | None = None,
                 client: Client | None = None, **options) -> Executor:
    """The executor :func:`map_many` runs its jobs on: on ``client`` or the cluster ``cluster`` describes (opened at
    its first batch, closed when the executor is left), else in this process. Several :func:`run_jobs` batches
    on one executor load the model once and measure ``auto``'s backend once
    (:class:`~dunemap.mapping.jobs.KeptChoice`)."""
    cluster = cluster or ClusterConfig()
    cluster.validate()
    model = ModelSpec.of(model, **options)
    if client is None and not cluster.enabled:
        return LocalExecutor(model)
    return DaskExecutor(model, cluster, client)


def run_jobs(jobs: Sequence[MapJob], executor: Executor, config: MapConfig | None = None) -> BatchMapResult:
    """Map ``jobs`` on ``executor``: the output policy applied to every job under its lock, then the executor runs."""
    config = config or MapConfig()
    config.validate()
    if not jobs:
        raise InputError("no input raster given")
    check_distinct_outputs(jobs)
    companions = [p for job in jobs for p in product_paths(job.out).values()]
    with locked_outputs([job.out for job in jobs], companions):
        check_job_outputs(jobs, config, executor.model.files())
        return executor.run(jobs, config)


def map_inputs(
    inputs: Sequence[str | os.PathLike],
    model: ModelSpec | str | os.PathLike,
    out: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    config: MapConfig | None = None,
    cluster: ClusterConfig | None = None,
    **options,
) -> BatchMapResult:
    """``dunemap map``: expand input patterns, plan the jobs (:func:`plan_jobs`) and :func:`map_many` them
    with ``model`` (a ModelSpec, or its weights with ``options``, ModelSpec fields)."""
    return map_many(plan_jobs(expand_inputs(inputs), out, out_dir), model, config, cluster, **options)
