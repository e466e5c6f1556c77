"""The mapping benchmark's window grid for the seed's design (the script itself runs in
tests/benchmarks_scripts/test_bench_smoke.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_mapping", BENCHMARKS / "bench_mapping.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("length, offset", [(2048, 128), (2048, 0), (600, 128), (1000, 100)])
def test_shifted_seed_grid_covers_the_axis_with_whole_windows(length: int, offset: int) -> None:
    starts = _bench_module().shifted_starts(length, offset)
    assert starts[0] == 0 and starts == sorted(set(starts))
    assert all(s + 512 <= length for s in starts)
    covered = set()
    for s in starts:
        covered.update(range(s, s + 512))
    assert covered == set(range(length))
    assert all((s - offset) % 256 == 0 for s in starts[1:-1])  # the seed's stride, moved by the offset
