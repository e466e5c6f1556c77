"""BENCHMARKS.md names window settings for what they are: no old window pair is called dunemap's default."""

from __future__ import annotations

import re
from pathlib import Path

from dunemap.mapping.config import MapConfig

REPO = Path(__file__).resolve().parents[2]


def test_no_table_calls_a_window_pair_other_than_todays_the_default() -> None:
    text = REPO.joinpath("BENCHMARKS.md").read_text()
    fallback = MapConfig().for_model(None)
    for window, stride in re.findall(r"(?<!old )defaults?:? (\d+)/(\d+)", text):  # "old defaults" says what they are
        assert (int(window), int(stride)) == (fallback.window, fallback.stride), f"{window}/{stride} called a default"
    assert "512/480" in text and "dunemap's windows then: 512/480" in text
