"""SeedLayoutDataset: loading, region filters, class counts, and one distinct error per kind of bad file."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from dunemap.data.dataset import SeedLayoutDataset
from dunemap.data.manifest import TileRecord, write_manifest
from dunemap.data.seed_layout import image_path, label_path, write_sample
from dunemap.data.transforms import RandomFlipRotate
from dunemap.errors import ConfigError, InputError

C, H, W, K = 4, 8, 8, 10


def _make(root: Path, split: str = "train", names: tuple[str, ...] = ("s0", "s1", "s2"), seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    out = []
    for name in names:
        image = rng.standard_normal((C, H, W)).astype(np.float32)
        label = rng.integers(0, K, size=(H, W)).astype(np.uint8)
        label[rng.random((H, W)) < 0.1] = 255
        write_sample(root, split, name, image, label)
        out.append((image, label))
    return out


def test_getitem_returns_checked_tensors(tmp_path) -> None:
    data = _make(tmp_path)
    ds = SeedLayoutDataset(tmp_path, "train", num_classes=K, in_channels=C)
    assert len(ds) == 3 and ds.names == ["s0", "s1", "s2"]
    x, y = ds[1]
    assert x.dtype == torch.float32 and x.shape == (C, H, W)
    assert y.dtype == torch.int64 and y.shape == (H, W)
    np.testing.assert_array_equal(x.numpy(), data[1][0])
    np.testing.assert_array_equal(y.numpy(), data[1][1])
    assert ds.check_all(progress=False) == 3


def test_default_in_channels_is_64(tmp_path) -> None:
    write_sample(tmp_path, "val", "a", np.zeros((64, 3, 5)), np.zeros((3, 5), dtype=np.uint8))
    x, _ = SeedLayoutDataset(tmp_path, "val", num_classes=K)[0]
    assert x.shape == (64, 3, 5)


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_other_float_dtypes_become_float32(tmp_path, dtype) -> None:
    _make(tmp_path, names=("a",))
    values = np.linspace(-1, 1, C * H * W).reshape(C, H, W).astype(dtype)
    np.save(image_path(tmp_path, "train", "a"), values)
    x, _ = SeedLayoutDataset(tmp_path, "train", num_classes=K, in_channels=C)[0]
    assert x.dtype == torch.float32
    np.testing.assert_array_equal(x.numpy(), values.astype(np.float32))


def test_class_counts(tmp_path) -> None:
    data = _make(tmp_path, names=("a", "b", "c", "d"))
    counts = SeedLayoutDataset(tmp_path, "train", num_classes=K, in_channels=C).class_counts()
    labels = np.stack([lab for _, lab in data])
    expected = np.bincount(labels[labels != 255], minlength=K)
    assert counts.dtype == np.int64
    np.testing.assert_array_equal(counts, expected)
    assert counts.sum() == (labels != 255).sum()


def test_transform_applied_and_dataloader_batches(tmp_path) -> None:
    data = _make(tmp_path)
    ds = SeedLayoutDataset(tmp_path, "train", num_classes=K, in_channels=C, transform=RandomFlipRotate())
    torch.manual_seed(0)
    seen = [ds[0] for _ in range(12)]
    assert any(not np.array_equal(x.numpy(), data[0][0]) for x, _ in seen)
    for x, y in seen:  # every draw is a joint symmetry of the stored pair
        assert sorted(x[0].flatten().tolist()) == sorted(data[0][0][0].flatten().tolist())
        assert sorted(y.flatten().tolist()) == sorted(data[0][1].flatten().tolist())
    xb, yb = next(iter(DataLoader(ds, batch_size=3)))
    assert xb.shape == (3, C, H, W) and yb.shape == (3, H, W)


def _write_manifest(root: Path, regions: dict[str, str], split: str = "train") -> None:
    write_manifest(root, [TileRecord(name=n, split=split, region=r) for n, r in regions.items()])


def test_region_filters(tmp_path) -> None:
    _make(tmp_path, names=("a", "b", "c"))
    _write_manifest(tmp_path, {"a": "namib", "b": "rub_al_khali", "c": "namib"})
    kw = dict(num_classes=K, in_channels=C)
    assert SeedLayoutDataset(tmp_path, "train", regions=["namib"], **kw).names == ["a", "c"]
    assert SeedLayoutDataset(tmp_path, "train", regions="rub_al_khali", **kw).names == ["b"]
    assert SeedLayoutDataset(tmp_path, "train", exclude_regions=["namib"], **kw).names == ["b"]
    assert SeedLayoutDataset(tmp_path, "train", **kw).names == ["a", "b", "c"]
    assert SeedLayoutDataset(tmp_path, "train", regions=[], exclude_regions=[], **kw).names == ["a", "b", "c"]
    known = "region(s) ['gobi'] not in the manifest; known regions: ['namib', 'rub_al_khali']"
    with pytest.raises(InputError, match=re.escape(known)):
        SeedLayoutDataset(tmp_path, "train", regions=["gobi"], **kw)
    with pytest.raises(InputError, match=r"no sample of split 'train' left after the region filter"):
        SeedLayoutDataset(tmp_path, "train", regions=["namib"], exclude_regions=["namib"], **kw)


def test_region_filter_needs_manifest_rows(tmp_path) -> None:
    _make(tmp_path, names=("a", "b"))
    kw = dict(num_classes=K, in_channels=C)
    with pytest.raises(InputError, match=re.escape(f"{tmp_path / 'manifest.csv'}: not found; a region filter")):
        SeedLayoutDataset(tmp_path, "train", regions=["namib"], **kw)
    _write_manifest(tmp_path, {"a": "namib"})
    with pytest.raises(InputError, match=r"1 sample\(s\) of split 'train' have no row \(first: 'b'\)"):
        SeedLayoutDataset(tmp_path, "train", exclude_regions=["namib"], **kw)


def test_bad_num_classes(tmp_path) -> None:
    _make(tmp_path)
    with pytest.raises(ConfigError, match="num_classes=0"):
        SeedLayoutDataset(tmp_path, "train", num_classes=0, in_channels=C)


# --- one bad file per case; each writer damages sample "s1" of an otherwise good split ------------


def _img(root: Path) -> Path:
    return image_path(root, "train", "s1")


def _ann(root: Path) -> Path:
    return label_path(root, "train", "s1")


def _bands(root: Path) -> Path:
    np.save(_img(root), np.zeros((C + 2, H, W), np.float32))
    return _img(root)


def _dtype(root: Path) -> Path:
    np.save(_img(root), np.zeros((C, H, W), np.int16))
    return _img(root)


def _ndim(root: Path) -> Path:
    np.save(_img(root), np.zeros((H, W), np.float32))
    return _img(root)


def _size(root: Path) -> Path:
    Image.fromarray(np.zeros((H + 2, W), np.uint8)).save(_ann(root))
    return _ann(root)


def _corrupt_npy(root: Path) -> Path:
    data = _img(root).read_bytes()
    _img(root).write_bytes(data[: len(data) // 2])
    return _img(root)


def _not_npy(root: Path) -> Path:
    _img(root).write_bytes(b"this is not numpy")
    return _img(root)


def _corrupt_png(root: Path) -> Path:
    _ann(root).write_bytes(b"\x89PNG garbage")
    return _ann(root)


def _rgb_png(root: Path) -> Path:
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(_ann(root))
    return _ann(root)


def _jpeg_label(root: Path) -> Path:
    Image.fromarray(np.zeros((H, W), np.uint8)).save(_ann(root), format="JPEG")
    return _ann(root)


# construction-time (header) checks
@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_bands, rf"image has {C + 2} bands \(shape \({C + 2}, {H}, {W}\)\); expected {C}$"),
        (_dtype, r"image dtype is int16; expected a float dtype \(float16, float32 or float64\)"),
        (_ndim, rf"image has 2 dimension\(s\) \({H}, {W}\); expected 3 \(bands, height, width\)"),
        (_size, rf"label is {H + 2}x{W} \(H x W\) but image s1\.npy is {H}x{W}; expected equal sizes"),
        (_corrupt_npy, r"unreadable or corrupt \.npy file \(ValueError: mmap length is greater than file size\)"),
        (_not_npy, r"not a \.npy file \(no NUMPY header\)"),
        (_corrupt_png, r"unreadable or corrupt label PNG \(UnidentifiedImageError"),
        (_rgb_png, r"label PNG has mode RGB; expected 8-bit single-channel \(L or P\)"),
        (_jpeg_label, r"label is a JPEG file; expected a PNG"),
    ],
    ids=lambda v: getattr(v, "__name__", "msg"),
)
def test_bad_file_fails_at_construction(tmp_path, damage, message) -> None:
    _make(tmp_path)
    bad = damage(tmp_path)
    with pytest.raises(InputError, match=re.escape(str(bad)) + ": " + message) as info:
        SeedLayoutDataset(tmp_path, "train", num_classes=K, in_channels=C)
    assert "\n" not in str(info.value)


def _nan(root: Path) -> Path:
    image = np.ones((C, H, W), np.float32)
    image[0, 0, :2] = np.nan
    image[3, 5, 5] = np.inf
    np.save(_img(root), image)
    return _img(root)


def _label_ids(root: Path) -> Path:
    label = np.zeros((H, W), np.uint8)
    label[0, :3] = [12, 200, 255]
    Image.fromarray(label).save(_ann(root))
    return _ann(root)


def _truncated_png(root: Path) -> Path:
    big = np.random.default_rng(5).integers(0, K, size=(64, 64)).astype(np.uint8)
    write_sample(root, "train", "s1", np.zeros((C, 64, 64), np.float32), big)
    data = _ann(root).read_bytes()
    _ann(root).write_bytes(data[: len(data) // 2])
    return _ann(root)


# load-time (value) checks: construction succeeds, check_all and __getitem__ fail on the bad sample
@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_nan, rf"image holds 3 NaN/inf value\(s\) of {C * H * W}; expected finite values"),
        (_label_ids, r"label holds class id\(s\) 12, 200 outside \[0, 10\); expected 0\.\.9 or 255 \(ignore\)"),
        (_truncated_png, r"unreadable or corrupt label PNG \(OSError: image file is truncated\)"),
    ],
    ids=lambda v: getattr(v, "__name__", "msg"),
)
def test_bad_values_fail_on_load(tmp_path, damage, message) -> None:
    _make(tmp_path)
    bad = damage(tmp_path)
    ds = SeedLayoutDataset(tmp_path, "train", num_classes=K, in_channels=C)
    ds[0]  # the good sample still loads
    pattern = re.escape(str(bad)) + ": " + message
    with pytest.raises(InputError, match=pattern):
        ds.check_all()
    with pytest.raises(InputError, match=pattern):
        ds[1]
