"""Whole-scene hold-out and in-scene/new-scene grouping of test tiles."""

from __future__ import annotations

from pathlib import Path

import pytest

from dunemap.data.dataset import SeedLayoutDataset
from dunemap.data.manifest import TileRecord, scene_groups
from dunemap.data.splits import holdout_scenes, in_scene_fractions
from dunemap.errors import InputError


def test_held_out_scenes_spread_over_regions_and_never_take_a_regions_last_scene() -> None:
    scenes = {"a": ["0", "1", "2", "3"], "b": ["0", "1"], "c": ["0"]}
    held = holdout_scenes(scenes, (0.6, 0.2, 0.2), seed=0)
    assert sorted(held.values()) == ["test", "val"]  # 20 % of 7 scenes each, rounded
    assert {g for g, _ in held} == {"a", "b"}  # one scene from each region that can spare one, none from c
    big = holdout_scenes({"a": ["0", "1", "2", "3"], "b": ["0", "1"]}, (0.2, 0.4, 0.4), seed=1)
    assert sum(g == "b" for g, _ in big) == 1 and sum(g == "a" for g, _ in big) == 3  # a region keeps one
    assert holdout_scenes(scenes, (0.6, 0.2, 0.2), seed=0) == held  # deterministic
    assert holdout_scenes({"a": ["0"]}, (0.7, 0.15, 0.15), seed=0) == {}  # nothing to spare


def test_in_scene_blocks_take_half_of_val_and_test() -> None:
    assert in_scene_fractions((0.7, 0.2, 0.1)) == pytest.approx((0.85, 0.1, 0.05))


def test_scene_groups_follow_the_training_sources() -> None:
    records = [TileRecord("t0", "train", source="A"), TileRecord("x0", "test", source="A"),
               TileRecord("x1", "test", source="B"), TileRecord("x2", "test", source=""),
               TileRecord("v0", "val", source="B")]
    assert scene_groups(records) == {"in_scene": ["x0", "x2"], "new_scene": ["x1"]}
    assert scene_groups(records, "val") == {"in_scene": [], "new_scene": ["v0"]}


def test_dataset_keeps_only_named_samples(tiny_dataset: Path) -> None:
    ds = SeedLayoutDataset(tiny_dataset, "train", num_classes=4, in_channels=16, names=["train_03", "train_01"])
    assert ds.names == ["train_01", "train_03"]
    with pytest.raises(InputError, match="split 'train' has no sample named 'nope'"):
        SeedLayoutDataset(tiny_dataset, "train", num_classes=4, in_channels=16, names=["train_01", "nope"])
