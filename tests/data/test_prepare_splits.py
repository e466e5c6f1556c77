"""Spatial-block splitting: blocks never straddle splits, kept tiles of different splits never overlap."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from affine import Affine

from dunemap.data.manifest import read_manifest
from dunemap.data.prepare import PrepareConfig, prepare_dataset
from dunemap.data.splits import (
    assign_blocks,
    block_keys,
    conflicting_pairs,
    parse_fractions,
    split_tiles,
)
from dunemap.errors import ConfigError
from dunemap.raster.geometry import window_starts


def grid_boxes(n_rows: int, n_cols: int, tile: float, stride: float) -> np.ndarray:
    return np.array([(c * stride, -(r * stride) - tile, c * stride + tile, -(r * stride))
                     for r in range(n_rows) for c in range(n_cols)], dtype=np.float64)


def overlaps(a: np.ndarray, b: np.ndarray, gap: float = 0.0) -> bool:
    return bool(a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap)


def test_parse_fractions():
    assert parse_fractions("0.7,0.15,0.15") == pytest.approx((0.7, 0.15, 0.15))
    assert parse_fractions((1, 0, 0)) == (1.0, 0.0, 0.0)
    for bad in ("0.7,0.3", "a,b,c", "0.5,0.6,-0.1", "0.5,0.2,0.2", "0,0.5,0.5"):
        with pytest.raises(ConfigError, match="split"):
            parse_fractions(bad)


def test_block_keys_group_adjacent_tiles():
    boxes = grid_boxes(4, 4, 10.0, 10.0)
    keys = block_keys(boxes, 20.0)
    assert len(set(keys)) == 4
    assert keys[0] == keys[1] == keys[4] == keys[5]
    assert keys[0] != keys[2]


def test_assign_blocks_is_seeded_and_balanced():
    sizes = {(i, j): 4 for i in range(10) for j in range(10)}
    a = assign_blocks(sizes, (0.7, 0.15, 0.15), seed=0)
    assert a == assign_blocks(sizes, (0.7, 0.15, 0.15), seed=0)
    assert a != assign_blocks(sizes, (0.7, 0.15, 0.15), seed=1)
    counts = {s: list(a.values()).count(s) for s in ("train", "val", "test")}
    assert counts == {"train": 70, "val": 15, "test": 15}
    assert set(assign_blocks(sizes, (1.0, 0.0, 0.0), seed=0).values()) == {"train"}


def test_conflicting_pairs_match_brute_force():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, size=(80, 2))
    boxes = np.column_stack([xy, xy + rng.uniform(1, 15, size=(80, 2))])
    for gap in (0.0, 3.0):
        got = {tuple(p) for p in conflicting_pairs(boxes, gap=gap)}
        want = {(i, j) for i, j in itertools.combinations(range(80), 2) if overlaps(boxes[i], boxes[j], gap)}
        assert got == want
    touching = grid_boxes(1, 2, 10.0, 10.0)
    assert len(conflicting_pairs(touching)) == 0
    assert len(conflicting_pairs(touching, gap=1.0)) == 1


@pytest.mark.parametrize("stride,gap", [(10.0, 0.0), (6.0, 0.0), (10.0, 10.0)])
def test_split_tiles_keeps_splits_apart(stride, gap):
    tile = 10.0
    boxes = grid_boxes(12, 12, tile, stride)
    result = split_tiles(boxes, (0.6, 0.2, 0.2), block_extent=4 * stride, seed=4, gap=gap, tol=0.1)
    assert result == split_tiles(boxes, (0.6, 0.2, 0.2), block_extent=4 * stride, seed=4, gap=gap, tol=0.1)
    kept = [i for i, s in enumerate(result.splits) if s is not None]
    assert all(result.counts()[s] > 0 for s in ("train", "val", "test"))
    # no block holds tiles of two splits
    per_block: dict = {}
    for i in kept:
        per_block.setdefault(result.blocks[i], set()).add(result.splits[i])
    assert all(len(s) == 1 for s in per_block.values())
    # no two kept tiles of different splits overlap (or come within the gap)
    for i, j in itertools.combinations(kept, 2):
        if result.splits[i] != result.splits[j]:
            assert not overlaps(boxes[i], boxes[j], gap - 0.1), (i, j)
    if stride == tile and gap == 0.0:
        assert result.num_dropped == 0
    else:
        assert 0 < result.num_dropped < len(boxes) // 2
        # only train tiles are trimmed while val and test stay whole, unless val meets test
        dropped_blocks = {result.block_splits[result.blocks[i]] for i, s in enumerate(result.splits) if s is None}
        assert "train" in dropped_blocks


def test_prepare_split_has_no_leak_between_splits(tmp_path: Path):
    """Overlapping tiles (stride < tile) from a real prepare run: splits share no block and no pixel."""
    h = w = 96
    tile, stride, block = 16, 8, 2
    transform = Affine(10, 0, 560000, 0, -10, 7300000)
    img = tmp_path / "emb.tif"
    with rasterio.open(img, "w", driver="GTiff", width=w, height=h, count=3, dtype="float32",
                       crs="EPSG:32733", transform=transform) as ds:
        ds.write(np.random.default_rng(0).normal(size=(3, h, w)).astype(np.float32))
    gpkg = tmp_path / "l.gpkg"
    poly = shapely.box(560000, 7300000 - 960, 560960, 7300000)
    pyogrio.raw.write(gpkg, np.array([shapely.to_wkb(poly)], dtype=object), [np.array([2])], ["class"],
                      geometry_type="Polygon", crs="EPSG:32733", driver="GPKG")
    out = tmp_path / "ds"
    summary = prepare_dataset(PrepareConfig(in_channels=3, images=[img], labels=[gpkg], out=out, tile=tile,
                                            stride=stride, block_tiles=block, split=(0.6, 0.2, 0.2), seed=0))
    records = read_manifest(out)
    n_positions = len(window_starts(h, tile, stride)) * len(window_starts(w, tile, stride))
    assert len(records) + summary.dropped_for_split == n_positions
    assert all(summary.tiles[s] > 0 for s in ("train", "val", "test"))
    extent = block * stride * 10.0
    blocks: dict = {}
    for rec in records:
        t = Affine(*[float(v) for v in rec.transform.split()])
        cx, cy = t.c + 5 * tile, t.f - 5 * tile
        blocks.setdefault((int(np.floor(cx / extent)), int(np.floor(cy / extent))), set()).add(rec.split)
    assert all(len(s) == 1 for s in blocks.values())
    for a, b in itertools.combinations(records, 2):
        if a.split != b.split:
            rows = a.row_off < b.row_off + tile and b.row_off < a.row_off + tile
            cols = a.col_off < b.col_off + tile and b.col_off < a.col_off + tile
            assert not (rows and cols), (a.name, b.name)
    for split in ("train", "val", "test"):
        assert len(list((out / "img_dir" / split).glob("*.npy"))) == summary.tiles[split]
        assert len(list((out / "ann_dir" / split).glob("*.png"))) == summary.tiles[split]
