"""The seed training layout on disk: ``img_dir/{split}/NAME.npy`` images paired with ``ann_dir/{split}/NAME.png``.

Images are float32 arrays shaped (bands, H, W); labels are 8-bit greyscale PNGs of class ids with
255 marking pixels to ignore. A sample's two files share their stem.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from dunemap.data.manifest import MANIFEST_NAME
from dunemap.errors import ConfigError, InputError
from dunemap.io.atomic import atomic_path
from dunemap.io.outputs import publish

IMG_DIR = "img_dir"
ANN_DIR = "ann_dir"
IMG_SUFFIX = ".npy"
ANN_SUFFIX = ".png"
IGNORE_INDEX = 255


def image_path(root: str | Path, split: str, name: str) -> Path:
    """The path of sample ``name``'s image in ``split``."""
    return Path(root) / IMG_DIR / split / f"{name}{IMG_SUFFIX}"


def label_path(root: str | Path, split: str, name: str) -> Path:
    """The path of sample ``name``'s label in ``split``."""
    return Path(root) / ANN_DIR / split / f"{name}{ANN_SUFFIX}"


def write_sample(root: str | Path, split: str, name: str, image: np.ndarray, label: np.ndarray) -> None:
    """Write one sample: ``image`` (C, H, W) as float32 .npy and ``label`` (H, W) as an 8-bit greyscale PNG.

    Both files are written atomically. Raises InputError when the arrays have the wrong number of
    dimensions, different spatial sizes, a non-finite image value or label ids outside 0..255.
    """
    image = np.asarray(image)
    label = np.asarray(label)
    where = f"sample {name!r} of split {split!r} under {root}"
    if image.ndim != 3:
        raise InputError(f"{where}: image has shape {image.shape}; expected (bands, height, width)")
    if label.ndim != 2:
        raise InputError(f"{where}: label has shape {label.shape}; expected (height, width)")
    if image.shape[1:] != label.shape:
        raise InputError(f"{where}: image {image.shape} and label {label.shape} differ in height/width")
    if not np.issubdtype(image.dtype, np.floating) and not np.issubdtype(image.dtype, np.integer):
        raise InputError(f"{where}: image dtype {image.dtype} is not numeric; expected float")
    if not np.issubdtype(label.dtype, np.integer) and label.dtype != np.bool_:
        raise InputError(f"{where}: label dtype {label.dtype} is not an integer type; expected uint8 class ids")
    if label.size and (label.min() < 0 or label.max() > 255):
        raise InputError(f"{where}: label ids span [{label.min()}, {label.max()}]; expected 0..255 (255 = ignore)")
    image32 = np.ascontiguousarray(image, dtype=np.float32)
    n_bad = int(np.count_nonzero(~np.isfinite(image32)))
    if n_bad:
        raise InputError(f"{where}: image holds {n_bad} NaN/inf value(s) after conversion to float32")

    img_file = image_path(root, split, name)
    ann_file = label_path(root, split, name)
    with atomic_path(img_file) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, image32, allow_pickle=False)
    with atomic_path(ann_file) as tmp:
        Image.fromarray(np.ascontiguousarray(label, dtype=np.uint8)).save(tmp, format="PNG")


def _existing_splits(root: Path) -> list[str]:
    img_root = root / IMG_DIR
    if not img_root.is_dir():
        return []
    return sorted(p.name for p in img_root.iterdir() if p.is_dir())


def _files_by_stem(directory: Path, suffix: str) -> dict[str, Path]:
    """Files of ``directory`` ending in ``suffix`` keyed by stem, skipping hidden ones (atomic writes in progress)."""
    return {
        p.stem: p
        for p in directory.iterdir()
        if p.suffix == suffix and not p.name.startswith(".") and p.is_file()
    }


def list_samples(root: str | Path, split: str) -> list[tuple[Path, Path]]:
    """Return the (image, label) path pairs of ``split``, paired by file stem and sorted by it.

    Raises InputError when the split's image or label directory is missing (listing the splits that
    exist), when an image has no label or a label no image, or when the split holds no samples.
    """
    root = Path(root)
    img_dir = root / IMG_DIR / split
    ann_dir = root / ANN_DIR / split
    for d in (img_dir, ann_dir):
        if not d.is_dir():
            existing = _existing_splits(root)
            have = ", ".join(existing) if existing else f"none (no {IMG_DIR}/<split> directories)"
            raise InputError(f"split {split!r} not found: {d} is not a directory; existing splits: {have}")
    images = _files_by_stem(img_dir, IMG_SUFFIX)
    labels = _files_by_stem(ann_dir, ANN_SUFFIX)
    no_label = sorted(images.keys() - labels.keys())
    if no_label:
        more = f" (and {len(no_label) - 1} more)" if len(no_label) > 1 else ""
        raise InputError(
            f"image {images[no_label[0]]} has no label: expected {ann_dir / (no_label[0] + ANN_SUFFIX)}{more}"
        )
    no_image = sorted(labels.keys() - images.keys())
    if no_image:
        more = f" (and {len(no_image) - 1} more)" if len(no_image) > 1 else ""
        raise InputError(
            f"label {labels[no_image[0]]} has no image: expected {img_dir / (no_image[0] + IMG_SUFFIX)}{more}"
        )
    if not images:
        raise InputError(f"split {split!r} is empty: no *{IMG_SUFFIX} images in {img_dir}")
    return [(images[stem], labels[stem]) for stem in sorted(images)]


def check_dataset_out(out: str | Path, overwrite: bool, summary_name: str) -> None:
    """Refuse to write a dataset into ``out`` when it is a file or already holds one (unless ``overwrite``)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output {out} is a file; expected a dataset folder")
    existing = [n for n in (IMG_DIR, ANN_DIR, MANIFEST_NAME, summary_name) if (out / n).exists()]
    if existing and not overwrite:
        raise ConfigError(f"output {out} already holds a dataset ({', '.join(existing)}); "
                          "choose a new folder or pass --overwrite")


def publish_dataset(staging: str | Path, out: str | Path, summary_name: str, splits: tuple[str, ...]) -> None:
    """Move a dataset staged in ``staging`` (inside ``out``) into ``out`` as one set (:func:`dunemap.io.outputs.publish`).

    Every split gets its folders, as readers expect the layout. The summary is the primary product: an
    earlier dataset's summary goes first and the new one comes last, so a summary beside the tiles means
    the whole set is from one run.
    """
    staging, out = Path(staging), Path(out)
    for split in splits:
        (staging / IMG_DIR / split).mkdir(parents=True, exist_ok=True)
        (staging / ANN_DIR / split).mkdir(parents=True, exist_ok=True)
    publish([(staging / name, out / name) for name in (IMG_DIR, ANN_DIR, MANIFEST_NAME, summary_name)])
