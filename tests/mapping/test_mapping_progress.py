"""The progress bars of long runs count what takes the time: windows of a map, steps of a capped epoch."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

from dunemap.mapping.engine import MapConfig, map_raster, plan_map
from dunemap.raster.reader import EmbeddingReader
from dunemap.runtime import load_predictor


class Terminal(io.StringIO):
    """A stderr that says it is a terminal, so bars are drawn into it."""

    def isatty(self) -> bool:
        return True


def test_map_bar_counts_windows_with_rate_and_eta(tmp_path: Path, aef_raster, tiny_checkpoint: Path,
                                                  monkeypatch) -> None:
    path = aef_raster(96, 80)
    config = MapConfig(window=32, stride=16, block_size=128)  # one block of many windows
    with EmbeddingReader(path) as reader:
        plan = plan_map(reader, config.for_model(None))
    windows = sum(len(b.windows) for b in plan.blocks)
    assert len([b for b in plan.blocks if b.windows]) == 1 and windows >= 20
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    map_raster(path, load_predictor(tiny_checkpoint), tmp_path / "m.tif", config)
    final = terminal.getvalue().split("\r")[-1]
    assert re.search(rf"\b{windows}/{windows} \[\d\d:\d\d<00:00, +[\d.]+ ?(window/s|s/window)\]", final), final


def test_train_bar_counts_the_capped_steps(tiny_dataset: Path, tmp_path: Path, monkeypatch) -> None:
    from dunemap.training import TrainConfig, train

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    train(TrainConfig(data_root=tiny_dataset, save_dir=tmp_path / "run", model="mit_tiny", in_channels=16, epochs=1,
                      batch_size=2, text="random", precision="fp32", device="cpu", seed=0, progress=True,
                      max_steps_per_epoch=2, catalog=tiny_dataset / "catalog.yaml"))
    epoch = [part for part in terminal.getvalue().split("\r") if part.startswith("epoch 1/1")]
    assert epoch and all(re.search(r"\| [0-2]/2 \[", part) for part in epoch), epoch  # of 2 steps, not 8
