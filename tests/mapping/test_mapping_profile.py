"""Stage profile and seam index: exact counts on hand-made class maps, the file reader, ``dunemap map --profile``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio
from mapping_helpers import UTM_CRS, UTM_TRANSFORM

from dunemap.mapping import profile
from dunemap.mapping.profile import STAGES, edge_lines, seam_index, seam_index_file

REPO = Path(__file__).resolve().parents[2]


def test_edge_lines_are_window_starts_and_ends() -> None:
    # windows of 4 at stride 3 on 10 px: starts 0, 3, 6 (ends 4, 7, 10)
    assert np.flatnonzero(edge_lines(10, 4, 3)).tolist() == [3, 4, 6, 7]
    assert not edge_lines(8, 16, 8).any()  # one window covers the axis: no edges


def test_seam_index_counts_changes_on_edges_and_elsewhere() -> None:
    classes = np.zeros((8, 8), dtype=np.uint8)
    classes[4:, :] = 1  # a straight line along the window edge between rows 3 and 4 (window 4, stride 4)
    classes[0, 1] = 2  # one isolated pixel away from edges: 3 changes (left, right, below) off the edges
    s = seam_index(classes, window=4, stride=4)
    # edge lines: row line 4 (8 pairs, 8 changes) and column line 4 (8 pairs, 0 changes)
    assert (s.edge_pairs, s.edge_rate) == (16, 0.5)
    # other lines: 6 row lines + 6 column lines of 8 pairs = 96 pairs, 3 changes
    assert (s.other_pairs, s.other_rate) == (96, 3 / 96)
    assert s.index == 0.5 / (3 / 96)


def test_seam_index_skips_nodata_pairs() -> None:
    classes = np.zeros((4, 8), dtype=np.uint8)
    classes[:, 4:] = 255  # nodata right of the column edge: those pairs are not counted
    s = seam_index(classes, window=4, stride=4)
    assert s.edge_pairs == 0 and s.other_pairs == 3 * 4 + 3 * 4  # 3 row lines x 4 valid cols + 3 col lines x 4 rows


def test_seam_index_of_a_file_equals_the_array_strip_by_strip(tmp_path: Path, monkeypatch) -> None:
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 3, (37, 29)).astype(np.uint8)
    classes[rng.random(classes.shape) < 0.1] = 255
    path = tmp_path / "classes.tif"
    with rasterio.open(path, "w", driver="GTiff", height=37, width=29, count=1, dtype="uint8", nodata=255,
                       crs=UTM_CRS, transform=UTM_TRANSFORM) as dst:
        dst.write(classes, 1)
    monkeypatch.setattr(profile, "SEAM_STRIP_ROWS", 8)  # several strips, one row carried between them
    assert seam_index_file(path, 12, 8) == seam_index(classes, 12, 8)


def test_map_profile_prints_every_stages_share_of_wall_and_the_seam_index(tmp_path: Path, aef_raster,
                                                                          tiny_checkpoint: Path) -> None:
    """``dunemap map --profile`` in its own process: each stage's seconds and share of the wall time, the share of
    read and decode together, and the finished map's seam index."""
    path = aef_raster(96, 80)
    out = tmp_path / "map.tif"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "dunemap", "map", str(path), "--weights", str(tiny_checkpoint),
                           "--out", str(out), "--window", "64", "--stride", "32", "--block-size", "64", "--no-progress",
                           "--profile", "--precision", "fp32"], capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout
    rows = {ln.split()[0]: ln.split()[1:] for ln in text.splitlines() if len(ln.split()) == 3}
    wall = float(rows["wall"][0])
    seconds = {stage: float(rows[stage][0]) for stage in STAGES}
    slack = 0.05 + 0.02 / wall * 100  # printed: seconds to 2 decimals, shares to 1
    for stage in STAGES:  # each stage's share of the wall time
        assert seconds[stage] >= 0
        assert abs(float(rows[stage][1].rstrip("%")) - seconds[stage] / wall * 100) <= slack
    assert seconds["model"] > 0
    input_share = next(ln for ln in text.splitlines() if ln.startswith("read + decode:"))
    share = float(input_share.split()[3].rstrip("%"))
    assert abs(share - (seconds["read"] + seconds["decode"]) / wall * 100) <= slack
    with rasterio.open(out) as src:
        expected = seam_index(src.read(1), 64, 32)
    assert f"seam index {expected.index:.2f}" in text
