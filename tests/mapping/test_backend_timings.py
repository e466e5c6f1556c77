"""``auto`` keeps what it measured on this machine (dunemap.runtime.timings) and reuses it, checking agreement anew."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import rasterio

from dunemap.mapping.backend import sample_windows
from dunemap.mapping.config import MapConfig
from dunemap.raster.reader import EmbeddingReader
from dunemap.runtime import load_predictor
from dunemap.runtime.device import cpu_info
from dunemap.runtime.select import select_backend
from dunemap.runtime.timings import recall, remember, timing_key, timings_path

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")
REPO = Path(__file__).resolve().parents[2]
WINDOW = 64


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DUNEMAP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _records(cache: Path) -> list[Path]:
    return sorted((cache / "auto").glob("timings_*.json"))


def _choose(checkpoint: Path, raster: Path, caplog: pytest.LogCaptureFixture, timings: str = "reuse",
            min_agreement: float = 0.995, window: int = WINDOW):
    predictor = load_predictor(checkpoint, device="cpu", precision="fp32")
    with EmbeddingReader(raster, bands=64) as reader:
        samples = sample_windows(reader, MapConfig().for_model(window))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dunemap"):
        return select_backend(predictor, "auto", window, lambda: samples,
                              lambda: load_predictor(checkpoint, device="cpu", precision="fp32"),
                              min_agreement=min_agreement, codes=True, timings=timings)


def _auto_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("backend auto")]


def test_a_second_run_reuses_the_timings_and_checks_agreement_on_its_own_raster(
        cache: Path, tiny_checkpoint: Path, aef_raster, caplog: pytest.LogCaptureFixture) -> None:
    first_raster, second_raster = aef_raster(height=128, width=128, seed=1), aef_raster(128, 128, 2, name="b.tif")
    _, first = _choose(tiny_checkpoint, first_raster, caplog)
    assert {"torch", "onnxruntime", "openvino"} <= {name for name, _, _ in first.measured}
    [record] = _records(cache)
    kept = json.loads(record.read_text())
    assert kept["seconds"] == {name: seconds for name, _, seconds in first.measured}
    assert kept["source"] == str(first_raster) and kept["key"]["window"] == WINDOW and kept["key"]["cpu"]["model"]

    runner, second = _choose(tiny_checkpoint, second_raster, caplog)
    [line] = _auto_lines(caplog)
    # the fastest kept that agrees on this raster: those faster than it are named as below the bar here
    order = sorted(kept["seconds"], key=lambda n: (kept["seconds"][n], n))
    faster = order[:order.index(second.name)]
    assert second.seconds == kept["seconds"][second.name] and second.agreement >= 0.995
    assert all(f"{name} " in line.partition("below it here: ")[2] for name in faster)
    assert ("below it here" in line) == bool(faster)
    assert [name for name, _, _ in second.measured] == [second.name]  # nothing was timed
    assert getattr(runner, "backend", "torch") == second.name
    assert f"chose {second.name} " in line and str(second_raster) in line and "measured on this machine" in line
    assert f"agreement {second.agreement:.2%} on this raster" in line
    assert _records(cache) == [record] and json.loads(record.read_text()) == kept  # reusing changes nothing

    # measuring again on request replaces the record
    _, third = _choose(tiny_checkpoint, second_raster, caplog, timings="measure")
    assert len(third.measured) == len(first.measured) and json.loads(record.read_text())["source"] == str(second_raster)

    # where no kept backend reaches the bar on this raster, every candidate is measured
    _, again = _choose(tiny_checkpoint, second_raster, caplog, min_agreement=1.01)  # none can reach it
    lines = _auto_lines(caplog)
    assert "none of the backends kept" in lines[0] and "on 101.0% of its pixels" in lines[0]
    assert "measured per window" in lines[-1] and len(again.measured) == len(first.measured)
    assert (again.engine, again.precision, again.agreement) == ("torch", "fp32", 1.0)  # the exact reference

    # a record that cannot be read is measured over and replaced
    record.write_text("{ not json")
    _, fourth = _choose(tiny_checkpoint, second_raster, caplog)
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert str(record) in warning and "is not a record of timings" in warning
    assert len(fourth.measured) == len(kept["seconds"]) and set(json.loads(record.read_text())["seconds"]) == set(
        kept["seconds"])


KEY = dict(checkpoint="ab" * 32, window=64, torch="fp32", batch=1, batch_per_stream=True, threads=2, codes=True,
           candidates=["onnxruntime", "openvino"])


def test_records_are_keyed_by_everything_speed_depends_on_and_bad_ones_are_refused(
        cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    key = timing_key(**KEY)
    assert key["cpu"] == cpu_info() and set(key["packages"]) == {"torch", "onnxruntime", "openvino"}
    assert recall(key) is None  # never measured: nothing to say
    path = remember(key, {"torch": 0.02, "openvino": 0.01, "onnxruntime": 0.015}, "scene.tif")
    assert path == timings_path(key) and not list(path.parent.glob("*.tmp"))
    kept = recall(key)
    assert kept.fastest() == "openvino" and kept.source == "scene.tif" and kept.path == path
    assert timings_path(timing_key(**{**KEY, "window": 128})) != path
    assert timings_path(timing_key(**{**KEY, "threads": 1})) != path
    record = json.loads(path.read_text())
    not_candidates = {"onnxruntime-int8": 0.001}
    for bad, why in ((json.dumps({**record, "seconds": not_candidates}), "backends that are not candidates"),
                     (json.dumps({**record, "seconds": {"torch": 0}}), "no positive seconds"),
                     (json.dumps({**record, "key": {**record["key"], "window": 32}}), "its key is not this run's"),
                     ("", "Expecting value")):
        path.write_text(bad)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="dunemap"):
            assert recall(key) is None
        [line] = [r.getMessage() for r in caplog.records]
        assert str(path) in line and "is not a record of timings" in line and why in line, line


def test_a_cache_that_cannot_be_written_costs_only_the_next_runs_measuring(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder would be made\n")
    monkeypatch.setenv("DUNEMAP_CACHE", str(blocker))
    with caplog.at_level(logging.INFO, logger="dunemap"):
        assert remember(timing_key(**KEY), {"torch": 0.02}, "scene.tif") is None
    [line] = [r.getMessage() for r in caplog.records]
    assert "could not keep the timings" in line
    assert blocker.read_text() == "a file where the cache folder would be made\n"


def _map(raster: Path, out: Path, checkpoint: Path, cache: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "DUNEMAP_CACHE": str(cache)}
    argv = ["map", str(raster), "--weights", str(checkpoint), "--out", str(out), "--window", "32", "--stride", "8",
            "--threads", "1", "--no-progress", "--precision", "fp32", "--verbose", *extra]
    return subprocess.run([sys.executable, "-m", "dunemap", *argv], capture_output=True, text=True, env=env,
                          timeout=300)


def test_map_reuses_the_timings_of_an_earlier_map_and_remeasure_measures_again(
        tmp_path: Path, tiny_checkpoint: Path, aef_raster) -> None:
    raster = aef_raster(height=128, width=128, seed=5)  # 13 x 13 windows of 32 px: enough for auto to measure
    cache = tmp_path / "cache"
    runs = {}
    for name, extra in (("first", ()), ("again", ()), ("remeasured", ("--remeasure",))):
        proc = _map(raster, tmp_path / f"{name}.tif", tiny_checkpoint, cache, *extra)
        assert proc.returncode == 0, proc.stderr
        with rasterio.open(tmp_path / f"{name}.tif") as src:
            runs[name] = (proc.stderr, src.tags())
    assert "measured per window" in runs["first"][0] and "measured on this machine" not in runs["first"][0]
    assert "measured on this machine on" in runs["again"][0] and "measured per window" not in runs["again"][0]
    assert "measured per window" in runs["remeasured"][0]
    assert runs["again"][1]["BACKEND"] == runs["first"][1]["BACKEND"]
    assert float(runs["again"][1]["BACKEND_AGREEMENT"]) >= 0.995
    assert len(_records(cache)) == 1
