"""Stage profile and seam index: exact counts on hand-made class maps, the file reader, and ``dunemap map --profile``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from mapping_helpers import UTM_CRS, UTM_TRANSFORM

from dunemap.cli import main
from dunemap.mapping import profile
from dunemap.mapping.profile import STAGES, edge_lines, seam_index, seam_index_file


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


def test_map_profile_prints_every_stage_and_the_seam_index(tmp_path: Path, aef_raster, tiny_checkpoint: Path,
                                                            capsys) -> None:
    path = aef_raster(96, 80)
    out = tmp_path / "map.tif"
    code = main(["map", str(path), "--weights", str(tiny_checkpoint), "--out", str(out), "--window", "64",
                 "--stride", "32", "--block-size", "64", "--no-progress", "--profile", "--precision", "fp32"])
    assert code == 0
    text = capsys.readouterr().out
    for stage in STAGES:
        line = next(ln for ln in text.splitlines() if ln.startswith(stage))
        assert float(line.split()[1]) >= 0
    model = float(next(ln for ln in text.splitlines() if ln.startswith("model")).split()[1])
    assert model > 0
    with rasterio.open(out) as src:
        expected = seam_index(src.read(1), 64, 32)
    assert f"seam index {expected.index:.2f}" in text
