"""Mapping on Dask: real worker processes on loopback, byte-identical maps, a killed worker, many inputs."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from distributed import Client, LocalCluster
from mapping_helpers import UTM_TRANSFORM, interrupted_run, smooth_unit_vectors, write_raster

from dunemap.cli import main
from dunemap.errors import ConfigError, InputError
from dunemap.io.aef import quantize
from dunemap.mapping.batch import map_many
from dunemap.mapping.config import ClusterConfig
from dunemap.mapping.distributed import gpu_slot, open_client
from dunemap.mapping.engine import MapConfig, map_raster
from dunemap.mapping.jobs import MapJob, expand_inputs, plan_jobs
from dunemap.mapping.writer import partial_dir
from dunemap.raster.reader import EmbeddingReader
from dunemap.runtime import load_predictor

# small blocks so that a 96x80 raster makes several tasks; confidence exercises a companion product
CONFIG = MapConfig(window=32, stride=24, block_size=32, confidence="uint8", progress=False)


@pytest.fixture(scope="module")
def cluster() -> LocalCluster:
    """Two real worker processes (one thread each) on loopback, shared by this module's tests."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=logging.WARNING) as local:
        yield local


@pytest.fixture
def one_torch_thread():
    """Dask workers run torch on one thread; reference maps in this process do the same."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _reference(path, checkpoint: Path, out: Path, config: MapConfig = CONFIG):
    return map_raster(path, load_predictor(checkpoint, precision="fp32"), out, config)


def _on(cluster: LocalCluster, **kw) -> ClusterConfig:
    return ClusterConfig(scheduler=cluster.scheduler_address, **kw)


def test_gpu_slot_spreads_numbered_workers_over_gpus() -> None:
    assert [gpu_slot(name, 4) for name in (0, 1, 2, 3, 4, "5")] == [0, 1, 2, 3, 0, 1]
    assert gpu_slot(3, 1) == gpu_slot(3, 0) == 0  # one visible GPU (dask-cuda, SLURM): always GPU 0
    assert gpu_slot("SLURMCluster-3", 4) == gpu_slot(None, 4) == 0


def test_inputs_patterns_and_jobs(tmp_path: Path) -> None:
    for name in ("b.tif", "a.tif", "c.vrt"):
        (tmp_path / name).write_bytes(b"")
    pattern = str(tmp_path / "*.tif")
    assert expand_inputs([pattern, tmp_path / "a.tif"]) == [tmp_path / "a.tif", tmp_path / "b.tif"]
    with pytest.raises(InputError, match=r"\*\.png: no file matches this pattern"):
        expand_inputs([str(tmp_path / "*.png")])
    assert expand_inputs([tmp_path / "absent.tif"]) == [tmp_path / "absent.tif"]  # the reader reports it

    jobs = plan_jobs([tmp_path / "a.tif", tmp_path / "b.tif"], out_dir=tmp_path / "maps")
    assert jobs == [MapJob((tmp_path / "a.tif",), tmp_path / "maps" / "a_classes.tif"),
                    MapJob((tmp_path / "b.tif",), tmp_path / "maps" / "b_classes.tif")]
    assert plan_jobs([tmp_path / "a.tif", tmp_path / "b.tif"], out=tmp_path / "m.tif") == [
        MapJob((tmp_path / "a.tif", tmp_path / "b.tif"), tmp_path / "m.tif")]
    (tmp_path / "x").mkdir()
    with pytest.raises(InputError, match="would both be mapped to"):
        plan_jobs([tmp_path / "a.tif", tmp_path / "x" / "a.tif"], out_dir=tmp_path / "maps")
    with pytest.raises(ConfigError, match="exactly one of --out"):
        plan_jobs([tmp_path / "a.tif"], out=tmp_path / "m.tif", out_dir=tmp_path)


@pytest.mark.parametrize(("cluster_config", "message"), [
    (ClusterConfig(workers=2, scheduler="tcp://127.0.0.1:8786"), "not both"),
    (ClusterConfig(workers=-1), "--workers -1"),
    (ClusterConfig(scheduler="127.0.0.1:8786"), "expected e.g. tcp://HOST:8786"),
    (ClusterConfig(workers=1, max_in_flight=-2), "--max-in-flight -2"),
])
def test_cluster_config_errors_name_the_value(cluster_config: ClusterConfig, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        cluster_config.validate()


def test_unreachable_scheduler_is_a_one_line_error(tmp_path: Path, aef_raster, tiny_checkpoint: Path) -> None:
    with pytest.raises(ConfigError, match=r"tcp://127\.0\.0\.1:9: cannot connect to a Dask scheduler") as err:
        map_many([MapJob((aef_raster(),), tmp_path / "map.tif")], tiny_checkpoint, CONFIG,
                 ClusterConfig(scheduler="tcp://127.0.0.1:9", connect_timeout=1))
    assert "\n" not in str(err.value)
    assert not any(tmp_path.glob("map*"))


def test_two_workers_map_byte_identical_and_resume(tmp_path: Path, aef_raster, tiny_checkpoint: Path,
                                                  cluster: LocalCluster, one_torch_thread) -> None:
    path = aef_raster(96, 80)
    reference = _reference(path, tiny_checkpoint, tmp_path / "reference.tif")

    got = map_many([MapJob((path,), tmp_path / "dask.tif")], tiny_checkpoint, CONFIG, _on(cluster), precision="fp32")
    (m,) = got.maps
    assert got.workers == 2 and got.tasks == 6 and m.blocks == 9  # the last block column owns no window
    assert m.path.read_bytes() == reference.path.read_bytes()
    assert m.products["confidence"].read_bytes() == reference.products["confidence"].read_bytes()
    assert (m.windows_predicted, m.valid_pixels) == (reference.windows_predicted, reference.valid_pixels)
    assert "1 map(s), 6 block tasks on 2 Dask worker(s)" in got.summary()

    # a run that predicted two blocks and died; the cluster resumes it and runs only the other blocks
    out = tmp_path / "resumed.tif"
    predictor = load_predictor(tiny_checkpoint, precision="fp32")
    interrupted_run(path, out, predictor, CONFIG)
    resumed = map_many([MapJob((path,), out)], tiny_checkpoint, CONFIG, _on(cluster), precision="fp32")
    assert resumed.tasks == 4 and resumed.maps[0].blocks_resumed == 2
    assert out.read_bytes() == reference.path.read_bytes()
    assert not partial_dir(out).exists()


def _scheduler_busy_workers(dask_scheduler) -> list[str]:
    """Runs on the scheduler: workers running a task now."""
    return [w.address for w in dask_scheduler.workers.values() if w.processing]


def _scheduler_block_runs(dask_scheduler) -> dict[str, int]:
    """Runs on the scheduler: how many times each block task was started."""
    return dict(Counter(str(key) for key, _, finish, *_ in dask_scheduler.transition_log
                        if str(key).startswith("dunemap-block-") and finish == "processing"))


class WorkerKiller(threading.Thread):
    """SIGKILL one worker process that is running a task, once the map's journal shows two predicted blocks."""

    def __init__(self, client: Client, journal: Path) -> None:
        super().__init__()
        self.client, self.journal = client, journal
        self.pids = client.run(os.getpid)  # worker address -> process id
        self.stop = threading.Event()
        self.killed: dict[str, int] = {}

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                predicted = json.loads(self.journal.read_text())["predicted"]
            except (FileNotFoundError, ValueError, KeyError):
                predicted = []
            busy = self.client.run_on_scheduler(_scheduler_busy_workers) if len(predicted) >= 2 else []
            if busy:
                os.kill(self.pids[busy[0]], signal.SIGKILL)
                self.killed.update(pid=self.pids[busy[0]], predicted=len(predicted))
                return
            time.sleep(0.002)

    def __enter__(self) -> WorkerKiller:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join()


KILL_CONFIG = MapConfig(window=64, stride=32, block_size=32, confidence="uint8", progress=False)  # 49 block tasks


def test_killed_worker_is_replaced_and_the_map_completes(tmp_path: Path, aef_raster, tiny_checkpoint: Path,
                                                         cluster: LocalCluster, one_torch_thread) -> None:
    path = aef_raster(256, 256)
    reference = _reference(path, tiny_checkpoint, tmp_path / "reference.tif", KILL_CONFIG)
    out = tmp_path / "killed" / "map.tif"
    with Client(cluster, set_as_default=False) as probe:
        probe.wait_for_workers(2, timeout=60)
        with WorkerKiller(probe, partial_dir(out) / "journal.json") as killer:
            got = map_many([MapJob((path,), out)], tiny_checkpoint, KILL_CONFIG, _on(cluster), precision="fp32")
        assert 2 <= killer.killed["predicted"] < got.tasks == 49, "the worker was not killed mid-job"
        assert max(probe.run_on_scheduler(_scheduler_block_runs).values()) == 2  # its task ran again elsewhere
        probe.wait_for_workers(2, timeout=60)  # the nanny started a fresh worker in its place
        assert killer.killed["pid"] not in probe.run(os.getpid).values()
    assert out.read_bytes() == reference.path.read_bytes()
    assert (out.parent / "map_confidence.tif").read_bytes() == reference.products["confidence"].read_bytes()


def test_a_task_that_kills_too_many_workers_fails_the_run_which_then_resumes(
        tmp_path: Path, aef_raster, tiny_checkpoint: Path, one_torch_thread) -> None:
    path = aef_raster(256, 256)
    with open_client(ClusterConfig(workers=2, allowed_failures=0, dashboard_address=":0")) as client:
        assert client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.allowed_failures) == 0
        # A kill can land just after the worker's task finished: Dask then computes the lost result again and the
        # map completes, a different case (test_killed_worker_is_replaced_and_the_map_completes). Such an attempt
        # is run again on a new output, at most a few times, until a kill lands on a running task.
        for attempt in range(5):
            out = tmp_path / f"attempt{attempt}" / "map.tif"
            job = [MapJob((path,), out)]
            with WorkerKiller(client, partial_dir(out) / "journal.json") as killer:
                try:
                    map_many(job, tiny_checkpoint, KILL_CONFIG, precision="fp32", client=client)
                except ConfigError as exc:
                    assert re.search(r"map\.tif: the task of block \d+ was running on workers that died", str(exc))
                    break
            assert killer.killed and out.exists(), "no worker was killed, or the map neither failed nor finished"
            client.wait_for_workers(2, timeout=60)
        else:
            pytest.fail("in 5 attempts no kill landed on a running task")
        assert killer.killed and not out.exists() and partial_dir(out).exists()
        client.wait_for_workers(2, timeout=60)
        resumed = map_many(job, tiny_checkpoint, KILL_CONFIG, precision="fp32", client=client)
    assert resumed.maps[0].blocks_resumed >= 2 and resumed.tasks == 49 - resumed.maps[0].blocks_resumed
    reference = _reference(path, tiny_checkpoint, tmp_path / "reference.tif", KILL_CONFIG)
    assert out.read_bytes() == reference.path.read_bytes()


def test_many_inputs_are_one_job(tmp_path: Path, tiny_checkpoint: Path, cluster: LocalCluster,
                                 one_torch_thread) -> None:
    q = quantize(smooth_unit_vectors(64, 96, seed=7))
    whole = write_raster(tmp_path / "whole.tif", q, nodata=-128)
    left = write_raster(tmp_path / "left.tif", np.ascontiguousarray(q[:, :, :40]), nodata=-128)
    right = write_raster(tmp_path / "right.tif", np.ascontiguousarray(q[:, :, 40:]), nodata=-128,
                         transform=UTM_TRANSFORM @ rasterio.Affine.translation(40, 0))
    scene = write_raster(tmp_path / "scene.tif", quantize(smooth_unit_vectors(80, 72, seed=8)), nodata=-128)
    jobs = [MapJob((left, right), tmp_path / "out" / "mosaic.tif"), MapJob((scene,), tmp_path / "out" / "scene.tif")]
    got = map_many(jobs, tiny_checkpoint, CONFIG, _on(cluster, max_in_flight=3), precision="fp32")
    assert [m.path for m in got.maps] == [j.out for j in jobs]
    for m, source in zip(got.maps, (whole, scene)):
        ref = _reference(source, tiny_checkpoint, tmp_path / "ref" / m.path.name)
        assert m.path.read_bytes() == ref.path.read_bytes(), m.path.name
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "mosaic.qml", "mosaic.tif", "mosaic.tif.aux.xml", "mosaic_confidence.tif", "scene.qml", "scene.tif",
        "scene.tif.aux.xml", "scene_confidence.tif"]  # each class map with its legend companions


def test_cli_local_cluster_maps_a_pattern_into_a_directory(tmp_path: Path, aef_raster, tiny_checkpoint: Path,
                                                           capsys, caplog, one_torch_thread) -> None:
    scenes = [aef_raster(64, 80, seed=s, name=f"scene{s}.tif") for s in (1, 2)]
    out_dir = tmp_path / "maps"
    caplog.set_level(logging.INFO, logger="dunemap")
    code = main(["map", str(tmp_path / "scene*.tif"), "--out-dir", str(out_dir), "--weights", str(tiny_checkpoint),
                 "--window", "32", "--stride", "24", "--block-size", "32", "--precision", "fp32", "--no-progress",
                 "--workers", "1", "--dashboard-address", ":0"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "2 map(s)" in printed and "on 1 Dask worker(s)" in printed
    assert any("dashboard http://" in r.getMessage() for r in caplog.records)
    config = MapConfig(window=32, stride=24, block_size=32, progress=False)
    for scene in scenes:
        ref = _reference(scene, tiny_checkpoint, tmp_path / "ref" / scene.name, config)
        assert (out_dir / f"{scene.stem}_classes.tif").read_bytes() == ref.path.read_bytes()
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "scene1_classes.qml", "scene1_classes.tif", "scene1_classes.tif.aux.xml",
        "scene2_classes.qml", "scene2_classes.tif", "scene2_classes.tif.aux.xml"]


def test_out_dir_without_a_cluster_maps_each_input_in_this_process(tmp_path: Path, aef_raster,
                                                                    tiny_checkpoint: Path, capsys) -> None:
    scenes = [aef_raster(48, 40, seed=s, name=f"s{s}.tif") for s in (3, 4)]
    code = main(["map", *map(str, scenes), "--out-dir", str(tmp_path / "maps"), "--weights", str(tiny_checkpoint),
                 "--window", "32", "--stride", "32", "--precision", "fp32", "--no-progress"])
    assert code == 0 and "2 maps in" in capsys.readouterr().out
    config = MapConfig(window=32, stride=32, progress=False)
    for scene in scenes:
        ref = _reference(scene, tiny_checkpoint, tmp_path / "ref" / scene.name, config)
        assert (tmp_path / "maps" / f"{scene.stem}_classes.tif").read_bytes() == ref.path.read_bytes()


@pytest.mark.parametrize(("extra", "message"), [
    (["--out", "{tmp}/map.tif", "--workers", "2", "--scheduler", "tcp://127.0.0.1:8786"], "not both"),
    (["{tmp}/nothing*.tif", "--out-dir", "{tmp}/maps", "--workers", "2"], "nothing*.tif: no file matches"),
])
def test_cli_bad_cluster_options_are_one_line(tmp_path: Path, aef_raster, tiny_checkpoint: Path, capsys,
                                              extra: list[str], message: str) -> None:
    path = aef_raster(32, 32)
    extra = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    code = main(["map", str(path), *extra, "--weights", str(tiny_checkpoint), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("dunemap: error:") and message in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_workers_apply_a_checkpoints_class_shares_of_new_ground_as_a_local_map_does(
        tmp_path: Path, aef_raster, tiny_checkpoint: Path, cluster: LocalCluster, one_torch_thread) -> None:
    """A fine-tune's scene prior (dunemap.trust.prior) whose ground is the raster: the workers' map equals the
    local one byte for byte, both carry the SCENE_PRIOR tag, and both differ from the map without it."""
    from dunemap.models.checkpoint import load_checkpoint, save_checkpoint
    from dunemap.trust.prior import ScenePrior

    path = aef_raster(96, 80)
    loaded = load_checkpoint(tiny_checkpoint)
    k = len(loaded.class_names)
    with EmbeddingReader(path) as reader:
        ground = [{"source": str(path), "crs": reader.crs.to_wkt(), "bounds": list(reader.bounds)}]
    shares = [0.0] * k
    shares[-1] = 1.0  # the ground is all of the last class: every other class's logit falls
    prior = ScenePrior(shares, [1.0 / k] * k, ground, labelled_pixels=10, sampled_pixels=100, iterations=3)
    weights = tmp_path / "tuned.pth"
    save_checkpoint(weights, loaded.model, loaded.class_names, loaded.colors, loaded.text_source,
                    metrics=loaded.metrics, calibration={**loaded.calibration, "scene_prior": prior.to_dict()},
                    applicability=loaded.applicability)
    plain = _reference(path, tiny_checkpoint, tmp_path / "plain.tif")
    local = _reference(path, weights, tmp_path / "local.tif")
    got = map_many([MapJob((path,), tmp_path / "dask.tif")], weights, CONFIG, _on(cluster), precision="fp32")
    assert got.maps[0].path.read_bytes() == local.path.read_bytes()
    with rasterio.open(local.path) as a, rasterio.open(got.maps[0].path) as b, rasterio.open(plain.path) as c:
        assert a.tags()["SCENE_PRIOR"] == b.tags()["SCENE_PRIOR"] == prior.describe()
        assert "SCENE_PRIOR" not in c.tags()
        last, plain_last, valid = a.read(1) == k - 1, c.read(1) == k - 1, a.read_masks(1) > 0
        assert (last | ~plain_last).all()  # a pixel mapped as that class without the prior still is
        assert (last & valid).sum() > (plain_last & valid).sum()  # and more pixels now are


def test_workers_run_the_backend_chosen_once_as_a_local_map_does(
        tmp_path: Path, aef_raster, tiny_checkpoint: Path, cluster: LocalCluster, one_torch_thread,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """int8 calibrated on the first raster's windows: every worker builds the same model (from its cache or
    anew), so the cluster's map equals the local one byte for byte, and both name the backend in their tags."""
    pytest.importorskip("onnxruntime")
    cache = str(tmp_path / "cache")
    monkeypatch.setenv("DUNEMAP_CACHE", cache)
    with Client(cluster, set_as_default=False) as client:
        client.run(os.environ.__setitem__, "DUNEMAP_CACHE", cache)
        try:
            path = aef_raster(128, 96)
            config = MapConfig(window=64, stride=32, block_size=48, progress=False, backend="onnxruntime-int8")
            local = map_many([MapJob((path,), tmp_path / "local.tif")], tiny_checkpoint, config, precision="fp32")
            got = map_many([MapJob((path,), tmp_path / "dask.tif")], tiny_checkpoint, config, client=client,
                           precision="fp32")
        finally:
            client.run(os.environ.pop, "DUNEMAP_CACHE", None)
    assert got.tasks > 1 and got.maps[0].path.read_bytes() == local.maps[0].path.read_bytes()
    with rasterio.open(got.maps[0].path) as src:
        assert (src.tags()["BACKEND"], src.tags()["BACKEND_PRECISION"]) == ("onnxruntime", "int8")
    assert got.maps[0].backend == local.maps[0].backend == {"BACKEND": "onnxruntime", "BACKEND_PRECISION": "int8"}
