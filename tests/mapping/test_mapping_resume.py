"""Resume: the block journal, a run interrupted in-process, and a real process killed with SIGKILL."""

from __future__ import annotations

import dataclasses
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mapping_helpers import interrupted_run

from dunemap.mapping.engine import MapConfig, map_raster
from dunemap.mapping.resume import BlockJournal
from dunemap.runtime import load_predictor


def test_journal_round_trip_and_foreign_journals(tmp_path: Path) -> None:
    path = tmp_path / "journal.json"
    journal = BlockJournal(path, {"input": "a.tif", "window": (64, 32)})
    journal.record(predicted=3, written=(1, 3))
    journal.record(predicted=5)
    assert [p.name for p in tmp_path.iterdir()] == ["journal.json"]  # no temp file left behind
    again = BlockJournal.resume(path, {"input": "a.tif", "window": [64, 32]})
    assert again.predicted == {3, 5} and again.written == {1, 3}
    assert BlockJournal.resume(path, {"input": "b.tif", "window": [64, 32]}).empty
    path.write_text("{not json")
    assert BlockJournal.resume(path, {"input": "a.tif", "window": [64, 32]}).empty


def test_interrupted_run_resumes_and_changed_settings_start_over(tmp_path: Path, aef_raster, tiny_checkpoint: Path) -> None:
    path = aef_raster(96, 80)
    predictor = load_predictor(tiny_checkpoint, precision="fp32")
    config = MapConfig(window=32, stride=24, block_size=32, confidence="uint8", progress=False)
    reference = map_raster(path, predictor, tmp_path / "reference.tif", config)

    out = tmp_path / "map.tif"
    interrupted_run(path, out, predictor, config)  # a run that predicted two blocks, then died
    assert not out.exists() and (tmp_path / "map.tif.partial" / "journal.json").exists()

    other = MapConfig(window=32, stride=24, block_size=32, blend="cosine", confidence="uint8", progress=False)
    restarted = map_raster(path, predictor, out, other)  # different settings: the journal does not apply
    assert restarted.blocks_resumed == 0

    interrupted_run(path, out, predictor, config)  # an --overwrite run with the original settings, interrupted

    # the finished map is still there: resuming the interrupted --overwrite run needs --overwrite too
    resumed = map_raster(path, predictor, out, dataclasses.replace(config, overwrite=True))
    assert resumed.blocks_resumed == 2
    assert resumed.windows_predicted < reference.windows_predicted
    assert out.read_bytes() == reference.path.read_bytes()
    assert resumed.products["confidence"].read_bytes() == reference.products["confidence"].read_bytes()
    assert not (tmp_path / "map.tif.partial").exists()


@pytest.fixture
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_killed_process_resumes_byte_identical(tmp_path: Path, aef_raster, tiny_checkpoint: Path, one_torch_thread) -> None:
    path = aef_raster(256, 256)
    options = ["--weights", str(tiny_checkpoint), "--window", "64", "--stride", "32", "--block-size", "32",
               "--precision", "fp32", "--threads", "1", "--confidence", "uint8", "--no-progress"]
    out = tmp_path / "killed" / "map.tif"
    command = [sys.executable, "-m", "dunemap", "map", str(path), "--out", str(out), *options]
    journal = out.parent / "map.tif.partial" / "journal.json"

    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    predicted: list[int] = []
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            predicted = json.loads(journal.read_text())["predicted"]
        except (FileNotFoundError, ValueError, KeyError):
            predicted = []
        if len(predicted) >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not out.exists()
    at_kill = json.loads(journal.read_text())["predicted"]
    assert 3 <= len(at_kill) < 64

    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    resumed = int(re.search(r"\((\d+) resumed\)", done.stdout).group(1))
    assert resumed == len(at_kill)

    reference = map_raster(path, load_predictor(tiny_checkpoint, precision="fp32"), tmp_path / "whole" / "map.tif",
                           MapConfig(window=64, stride=32, block_size=32, confidence="uint8", progress=False))
    assert out.read_bytes() == reference.path.read_bytes()
    assert (out.parent / "map_confidence.tif").read_bytes() == reference.products["confidence"].read_bytes()
    assert sorted(p.name for p in out.parent.iterdir()) == ["map.qml", "map.tif", "map.tif.aux.xml", "map_confidence.tif"]
