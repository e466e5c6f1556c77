"""Synthetic seed-layout datasets: spatial-block splits, manifest, determinism and safe output handling."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dunemap.data.manifest import read_manifest
from dunemap.data.seed_layout import list_samples
from dunemap.errors import ConfigError
from dunemap.regions import REGIONS
from dunemap.synth.dataset import plan_tiles, read_summary, write_dataset

KW = dict(regions=["namib", "atacama"], scenes_per_region=2, scene_size=96, tile=32, block_tiles=2, seed=3,
          nodata_holes=True, region_px=48)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("ds") / "synth", **KW)


def _block(rec, block_px: int) -> tuple:
    a, b, c, d, e, f = (float(v) for v in rec.transform.split())
    cx, cy = c + a * rec.width / 2, f + e * rec.height / 2  # tile centre in map units
    return rec.region, math.floor(cx / (block_px * a)), math.floor(cy / (block_px * a))


def test_no_spatial_block_is_shared_between_splits(dataset):
    records = read_manifest(dataset)
    split_of_block: dict[tuple, set[str]] = {}
    for rec in records:
        split_of_block.setdefault(_block(rec, 2 * 32), set()).add(rec.split)
    assert all(len(s) == 1 for s in split_of_block.values())
    assert {r.split for r in records} == {"train", "val", "test"}
    assert len(split_of_block) >= 6


def test_manifest_matches_the_files_and_records_region_and_georeferencing(dataset):
    records = read_manifest(dataset)
    assert {r.region for r in records} == {"namib", "atacama"}
    for split in ("train", "val", "test"):
        names = [img.stem for img, _ in list_samples(dataset, split)]
        assert sorted(names) == sorted(r.name for r in records if r.split == split)
    for rec in records:
        assert rec.crs == f"EPSG:{REGIONS[rec.region].epsg}" and (rec.height, rec.width) == (32, 32)
        a, b, c, d, e, f = (float(v) for v in rec.transform.split())
        assert (a, b, d, e) == (10.0, 0.0, 0.0, -10.0)
    sample = records[0]
    image = np.load(dataset / "img_dir" / sample.split / f"{sample.name}.npy")
    label = np.asarray(Image.open(dataset / "ann_dir" / sample.split / f"{sample.name}.png"))
    assert image.shape == (64, 32, 32) and image.dtype == np.float32 and label.shape == (32, 32)
    valid = label != 255
    np.testing.assert_allclose(np.linalg.norm(image[:, valid], axis=0), 1.0, atol=1e-4)
    assert set(np.unique(label[valid]).tolist()) <= set(range(10))
    summary = read_summary(dataset)
    assert sum(summary["tiles"].values()) == len(records)


def test_tiles_are_windows_of_their_scene_at_the_recorded_position(dataset):
    from dunemap.synth.dataset import scene_seed
    from dunemap.synth.scene import SceneConfig, generate_scene

    rec = next(r for r in read_manifest(dataset) if r.region == "atacama")
    seed = int(rec.source.rsplit("_", 1)[1])
    a, _, c, _, e, f = (float(v) for v in rec.transform.split())
    origin = (c - rec.col_off * a, f - rec.row_off * e)
    scene = generate_scene(SceneConfig(size=(96, 96), region="atacama", seed=seed, nodata_holes=True,
                                       region_px=48, origin=origin))
    image = np.load(dataset / "img_dir" / rec.split / f"{rec.name}.npy")
    window = (slice(rec.row_off, rec.row_off + 32), slice(rec.col_off, rec.col_off + 32))
    np.testing.assert_array_equal(image, scene.embedding[:, window[0], window[1]])
    assert seed in {scene_seed(3, i) for i in range(2)}


def test_same_arguments_give_byte_identical_files(dataset, tmp_path):
    again = write_dataset(tmp_path / "again", **KW)
    files = sorted(p.relative_to(dataset) for p in dataset.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (dataset / rel).read_bytes() == (again / rel).read_bytes(), rel


def test_existing_dataset_is_kept_unless_overwrite(tmp_path):
    kw = dict(KW, regions=["yilgarn"], scenes_per_region=1, nodata_holes=False)
    out = write_dataset(tmp_path / "d", **kw)
    before = (out / "manifest.csv").read_bytes()
    with pytest.raises(ConfigError, match=r"already holds a dataset \(img_dir, ann_dir, manifest.csv, synth.json\)"):
        write_dataset(out, **dict(kw, seed=4))
    assert (out / "manifest.csv").read_bytes() == before
    write_dataset(out, **dict(kw, seed=4), overwrite=True)
    assert (out / "manifest.csv").read_bytes() != before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging left behind


@pytest.mark.parametrize("bad, match", [
    (dict(regions=["namib", "gobi"]), "unknown region 'gobi'"),
    (dict(tile=64, scene_size=48), "scene size 48 px is smaller than the tile"),
    (dict(split="0.5,0.5"), "expected three non-negative fractions"),
    (dict(scenes_per_region=0), "scenes per region 0"),
])
def test_bad_arguments_fail_before_writing_anything(tmp_path, bad, match):
    with pytest.raises(ConfigError, match=match):
        write_dataset(tmp_path / "d", **dict(KW, **bad))
    assert not (tmp_path / "d").exists()


def test_plan_deals_whole_blocks_and_roughly_follows_the_fractions():
    plan = plan_tiles(["qaidam"], 4, 256, 32, seed=0, block_tiles=2, fractions=(0.6, 0.2, 0.2), split_by="block")
    counts = {s: sum(t.split == s for t in plan) for s in ("train", "val", "test")}
    assert sum(counts.values()) == len(plan) == 4 * 64
    assert counts["train"] > counts["val"] > 0 and counts["test"] > 0
    assert abs(counts["train"] / len(plan) - 0.6) < 0.1



def test_by_default_whole_scenes_are_held_out_and_test_also_holds_in_scene_blocks(dataset):
    from dunemap.data.manifest import scene_groups

    records = read_manifest(dataset)
    splits_of_scene: dict[str, set[str]] = {}
    for rec in records:
        splits_of_scene.setdefault(rec.source, set()).add(rec.split)
    held = read_summary(dataset)["config"]["heldout_scenes"]
    assert len(held["val"]) == 1 and len(held["test"]) == 1  # 15 % of 4 scenes, at least one each
    for split, (name,) in held.items():
        assert splits_of_scene[f"synth:{name}"] == {split}  # a held-out scene feeds one split, never training
    for region in KW["regions"]:  # every region keeps a training scene
        assert any(r.region == region and r.split == "train" for r in records)
    groups = scene_groups(records, "test")
    assert groups["new_scene"] and all(r.source == f"synth:{held['test'][0]}" for r in records
                                       if r.name in groups["new_scene"])
    # On a larger plan the test split also holds blocks of training scenes: both scores can be computed.
    plan = plan_tiles(["namib", "qaidam"], 4, 256, 32, seed=0, block_tiles=2, fractions=(0.7, 0.15, 0.15))
    train_scenes = {(t.region, t.scene) for t in plan if t.split == "train"}
    test_scenes = {(t.region, t.scene) for t in plan if t.split == "test"}
    assert test_scenes - train_scenes and test_scenes & train_scenes


def test_block_split_lets_every_scene_feed_training(tmp_path):
    root = write_dataset(tmp_path / "blocks", **{**KW, "nodata_holes": False}, split_by="block")
    records = read_manifest(root)
    assert {r.source for r in records if r.split == "train"} == {r.source for r in records}
    assert read_summary(root)["config"]["heldout_scenes"] == {"val": [], "test": []}
    with pytest.raises(ConfigError, match="unknown split mode 'scenes'; valid: block, scene"):
        write_dataset(tmp_path / "bad", **KW, split_by="scenes")
