"""Writing seed-layout samples and pairing images with labels."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from dunemap.data.seed_layout import image_path, label_path, list_samples, write_sample
from dunemap.errors import InputError


def _sample(rng: np.random.Generator, c: int = 4, h: int = 6, w: int = 5) -> tuple[np.ndarray, np.ndarray]:
    image = rng.standard_normal((c, h, w))
    label = rng.integers(0, 10, size=(h, w)).astype(np.uint8)
    label[0, 0] = 255
    return image, label


def test_write_sample_round_trip(tmp_path) -> None:
    rng = np.random.default_rng(0)
    image, label = _sample(rng)
    write_sample(tmp_path, "train", "t0", image, label)

    img = np.load(tmp_path / "img_dir" / "train" / "t0.npy")
    assert img.dtype == np.float32 and img.shape == (4, 6, 5)
    np.testing.assert_array_equal(img, image.astype(np.float32))
    with Image.open(tmp_path / "ann_dir" / "train" / "t0.png") as im:
        assert im.format == "PNG" and im.mode == "L"
        np.testing.assert_array_equal(np.array(im), label)
    # only the two final files: no temporaries left behind
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["t0.npy", "t0.png"]
    assert image_path(tmp_path, "train", "t0").exists() and label_path(tmp_path, "train", "t0").exists()


@pytest.mark.parametrize(
    ("image_shape", "label_shape", "message"),
    [
        ((6, 5), (6, 5), r"image has shape \(6, 5\); expected \(bands, height, width\)"),
        ((4, 6, 5), (1, 6, 5), r"label has shape \(1, 6, 5\); expected \(height, width\)"),
        ((4, 6, 5), (5, 6), r"image \(4, 6, 5\) and label \(5, 6\) differ"),
    ],
)
def test_write_sample_rejects_bad_shapes(tmp_path, image_shape, label_shape, message) -> None:
    with pytest.raises(InputError, match=message):
        write_sample(tmp_path, "train", "bad", np.zeros(image_shape), np.zeros(label_shape, dtype=np.uint8))
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_write_sample_rejects_bad_values(tmp_path) -> None:
    image = np.zeros((2, 3, 3))
    image[0, 1, 1] = np.nan
    with pytest.raises(InputError, match=r"'bad' of split 'val'.*1 NaN/inf"):
        write_sample(tmp_path, "val", "bad", image, np.zeros((3, 3), dtype=np.uint8))
    with pytest.raises(InputError, match=r"label ids span \[0, 300\]"):
        write_sample(tmp_path, "val", "bad", np.zeros((2, 3, 3)), np.array([[0, 0, 300]] * 3))
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_list_samples_pairs_by_stem_sorted(tmp_path) -> None:
    rng = np.random.default_rng(1)
    for name in ["b", "a", "c10", "c2"]:
        write_sample(tmp_path, "train", name, *_sample(rng))
    write_sample(tmp_path, "val", "v", *_sample(rng))
    # in-progress atomic temporaries and unrelated files are not samples
    (tmp_path / "img_dir" / "train" / ".z.abc.tmp.npy").write_bytes(b"partial")
    (tmp_path / "ann_dir" / "train" / "notes.txt").write_text("x")

    pairs = list_samples(tmp_path, "train")
    assert [(i.name, a.name) for i, a in pairs] == [
        ("a.npy", "a.png"), ("b.npy", "b.png"), ("c10.npy", "c10.png"), ("c2.npy", "c2.png")
    ]
    assert pairs[0][0] == tmp_path / "img_dir" / "train" / "a.npy"
    assert [i.stem for i, _ in list_samples(tmp_path, "val")] == ["v"]


def test_list_samples_missing_split_names_path_and_existing(tmp_path) -> None:
    rng = np.random.default_rng(2)
    write_sample(tmp_path, "train", "a", *_sample(rng))
    write_sample(tmp_path, "val", "a", *_sample(rng))
    searched = tmp_path / "img_dir" / "test"
    expected = f"split 'test' not found: {searched} is not a directory; existing splits: train, val"
    with pytest.raises(InputError, match=re.escape(expected)):
        list_samples(tmp_path, "test")
    with pytest.raises(InputError, match="existing splits: none"):
        list_samples(tmp_path / "nowhere", "train")


def test_list_samples_missing_label_directory(tmp_path) -> None:
    (tmp_path / "img_dir" / "train").mkdir(parents=True)
    with pytest.raises(InputError, match=re.escape(f"{tmp_path / 'ann_dir' / 'train'} is not a directory")):
        list_samples(tmp_path, "train")


def test_list_samples_image_without_label(tmp_path) -> None:
    rng = np.random.default_rng(3)
    for name in ["a", "b", "c"]:
        write_sample(tmp_path, "train", name, *_sample(rng))
    label_path(tmp_path, "train", "b").unlink()
    label_path(tmp_path, "train", "c").unlink()
    pattern = r"image .*b\.npy has no label: expected .*ann_dir/train/b\.png \(and 1 more\)"
    with pytest.raises(InputError, match=pattern):
        list_samples(tmp_path, "train")


def test_list_samples_label_without_image(tmp_path) -> None:
    rng = np.random.default_rng(4)
    write_sample(tmp_path, "train", "a", *_sample(rng))
    write_sample(tmp_path, "train", "b", *_sample(rng))
    image_path(tmp_path, "train", "a").unlink()
    with pytest.raises(InputError, match=r"label .*a\.png has no image: expected .*img_dir/train/a\.npy$"):
        list_samples(tmp_path, "train")


def test_list_samples_empty_split(tmp_path) -> None:
    (tmp_path / "img_dir" / "train").mkdir(parents=True)
    (tmp_path / "ann_dir" / "train").mkdir(parents=True)
    expected = f"split 'train' is empty: no *.npy images in {tmp_path / 'img_dir' / 'train'}"
    with pytest.raises(InputError, match=re.escape(expected) + "$"):
        list_samples(tmp_path, "train")
