"""A PyTorch dataset over the seed layout (``img_dir``/``ann_dir``), validating every file it reads.

Cheap checks (pairing, the .npy header's shape and dtype, the PNG header's mode and size) run at
construction; value checks (NaN/inf, values beyond the reader's ``MAX_EMBEDDING_VALUE``, label ids) run
whenever a sample is loaded, and :meth:`SeedLayoutDataset.check_all` loads every sample once so that a bad
file fails before training.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from dunemap.data.manifest import MANIFEST_NAME, read_manifest
from dunemap.data.seed_layout import IGNORE_INDEX, list_samples
from dunemap.errors import ConfigError, InputError
from dunemap.io.progress import progress_bar
from dunemap.raster.reader import MAX_EMBEDDING_VALUE

log = logging.getLogger(__name__)

Transform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""A joint transform of (image (C, H, W) float32, label (H, W) int64) returning the same pair."""

_FLOAT_ITEMSIZES = (2, 4, 8)  # float16, float32, float64
_LABEL_MODES = ("L", "P")  # 8-bit single-channel PNGs: greyscale or palette indices
_NPY_MAGIC = b"\x93NUMPY"  # the first bytes of every .npy file


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _check_image_header(path: Path, shape: tuple[int, ...], dtype: np.dtype, in_channels: int) -> None:
    """Raise InputError unless ``shape``/``dtype`` describe a float (in_channels, H, W) image."""
    if len(shape) != 3:
        raise InputError(
            f"{path}: image has {len(shape)} dimension(s) {tuple(shape)}; expected 3 (bands, height, width)"
        )
    if dtype.kind != "f" or dtype.itemsize not in _FLOAT_ITEMSIZES:
        raise InputError(f"{path}: image dtype is {dtype}; expected a float dtype (float16, float32 or float64)")
    if shape[0] != in_channels:
        raise InputError(f"{path}: image has {shape[0]} bands (shape {tuple(shape)}); expected {in_channels}")
    if shape[1] == 0 or shape[2] == 0:
        raise InputError(f"{path}: image is empty (shape {tuple(shape)}); expected height and width > 0")


def _load_npy(path: Path, mmap_mode: str | None) -> np.ndarray:
    """np.load a .npy file (memory-mapped when ``mmap_mode`` is set), turning every failure into InputError."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(len(_NPY_MAGIC))
    except OSError as exc:
        raise InputError(f"{path}: cannot read image ({_one_line(exc)})") from None
    if magic != _NPY_MAGIC:
        raise InputError(f"{path}: not a .npy file (no NUMPY header); expected an array saved with numpy.save")
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: unreadable or corrupt .npy file ({_one_line(exc)})") from None


def read_image_header(path: Path, in_channels: int) -> tuple[int, int]:
    """Read only the .npy header of ``path``, check it, and return the image's (height, width)."""
    arr = _load_npy(path, mmap_mode="r")
    shape, dtype = arr.shape, arr.dtype
    del arr
    _check_image_header(path, shape, dtype, in_channels)
    return int(shape[1]), int(shape[2])


def read_image(path: Path, in_channels: int) -> np.ndarray:
    """Load and check a .npy image; return it as float32 (C, H, W). Raises InputError on any defect."""
    arr = _load_npy(path, mmap_mode=None)
    _check_image_header(path, arr.shape, arr.dtype, in_channels)
    with np.errstate(over="ignore", invalid="ignore"):  # a float64 beyond float32 becomes inf, counted below
        arr = np.ascontiguousarray(arr, dtype=np.float32)
    n_bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
    if n_bad:
        raise InputError(f"{path}: image holds {n_bad} NaN/inf value(s) of {arr.size}; expected finite values")
    n_huge = int(np.count_nonzero(np.abs(arr) > MAX_EMBEDDING_VALUE))
    if n_huge:  # finite, but BatchNorm's running statistics would not survive one such step
        raise InputError(f"{path}: image holds {n_huge} value(s) beyond +-{MAX_EMBEDDING_VALUE:g} (largest "
                         f"{float(np.abs(arr).max()):.3g}); expected embeddings (AEF: unit vectors, |v| <= 1)")
    return arr


def read_label_header(path: Path) -> tuple[int, int]:
    """Read only the PNG header of ``path``, check it is an 8-bit single-channel PNG, return (height, width)."""
    try:
        with Image.open(path) as im:
            fmt, mode, (width, height) = im.format, im.mode, im.size
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path}: unreadable or corrupt label PNG ({_one_line(exc)})") from None
    if fmt != "PNG":
        raise InputError(f"{path}: label is a {fmt} file; expected a PNG")
    if mode not in _LABEL_MODES:
        raise InputError(f"{path}: label PNG has mode {mode}; expected 8-bit single-channel (L or P)")
    return int(height), int(width)


def read_label(path: Path) -> np.ndarray:
    """Load a label PNG as a uint8 (H, W) array of class ids. Raises InputError when unreadable or not 8-bit."""
    try:
        with Image.open(path) as im:
            fmt, mode = im.format, im.mode
            im.load()
            arr = np.array(im)
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path}: unreadable or corrupt label PNG ({_one_line(exc)})") from None
    if fmt != "PNG" or mode not in _LABEL_MODES or arr.dtype != np.uint8 or arr.ndim != 2:
        raise InputError(f"{path}: label is a {fmt} image of mode {mode}; expected an 8-bit single-channel PNG")
    return arr


def label_histogram(label: np.ndarray, path: Path, num_classes: int) -> np.ndarray:
    """Return the 256-bin id histogram of a uint8 label, raising InputError for ids in [num_classes, 255)."""
    counts = np.bincount(label.ravel(), minlength=256)
    bad = np.flatnonzero(counts[num_classes:IGNORE_INDEX]) + num_classes
    if bad.size:
        ids = ", ".join(str(int(i)) for i in bad)
        raise InputError(
            f"{path}: label holds class id(s) {ids} outside [0, {num_classes}); "
            f"expected 0..{num_classes - 1} or {IGNORE_INDEX} (ignore)"
        )
    return counts


def _as_list(value: str | Sequence[str] | None) -> list[str] | None:
    """Normalise a region filter: a single name becomes a list; None or an empty sequence means no filter."""
    if value is None:
        return None
    values = [value] if isinstance(value, str) else list(value)
    return values or None


def filter_by_region(
    root: Path,
    split: str,
    pairs: list[tuple[Path, Path]],
    regions: list[str] | None,
    exclude_regions: list[str] | None,
) -> list[tuple[Path, Path]]:
    """Keep the pairs whose manifest region is in ``regions`` (if given) and not in ``exclude_regions``."""
    if regions is None and exclude_regions is None:
        return pairs
    manifest = root / MANIFEST_NAME
    records = read_manifest(root)
    if records is None:
        raise InputError(
            f"{manifest}: not found; a region filter (regions={regions}, exclude_regions={exclude_regions}) "
            "needs the dataset manifest"
        )
    known = sorted({r.region for r in records})
    unknown = sorted(set(regions or []) | set(exclude_regions or []))
    unknown = [r for r in unknown if r not in known]
    if unknown:
        raise InputError(f"{manifest}: region(s) {unknown} not in the manifest; known regions: {known}")
    region_of = {r.name: r.region for r in records if r.split == split}
    missing = [img.stem for img, _ in pairs if img.stem not in region_of]
    if missing:
        raise InputError(
            f"{manifest}: {len(missing)} sample(s) of split {split!r} have no row (first: {missing[0]!r}); "
            "cannot filter by region"
        )
    keep = [
        (img, ann)
        for img, ann in pairs
        if (regions is None or region_of[img.stem] in regions)
        and (exclude_regions is None or region_of[img.stem] not in exclude_regions)
    ]
    if not keep:
        present = sorted({region_of[img.stem] for img, _ in pairs})
        raise InputError(
            f"{manifest}: no sample of split {split!r} left after the region filter "
            f"(regions={regions}, exclude_regions={exclude_regions}); regions in this split: {present}"
        )
    return keep


class SeedLayoutDataset(Dataset):
    """Samples of one split of a seed-layout dataset as (image float32 (C, H, W), label int64 (H, W)) tensors.

    Args:
        root: the dataset directory holding ``img_dir/``, ``ann_dir/`` and optionally ``manifest.csv``.
        split: the split name (``train``, ``val``, ``test``).
        num_classes: label ids must lie in ``[0, num_classes)`` or be 255 (ignore).
        in_channels: the number of bands every image must have.
        transform: a joint transform applied to each (image, label) pair after loading.
        regions: keep only samples whose manifest ``region`` is one of these (None or empty: all).
        exclude_regions: drop samples whose manifest ``region`` is one of these (None or empty: none).
        names: keep only the samples with these names (file stems), e.g. the new-scene test tiles; None: all.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        num_classes: int,
        in_channels: int = 64,
        transform: Transform | None = None,
        regions: str | Sequence[str] | None = None,
        exclude_regions: str | Sequence[str] | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        if not 1 <= num_classes <= IGNORE_INDEX:
            raise ConfigError(f"num_classes={num_classes}; expected 1..{IGNORE_INDEX}")
        if in_channels < 1:
            raise ConfigError(f"in_channels={in_channels}; expected at least 1")
        self.root = Path(root)
        self.split = split
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.transform = transform
        pairs = list_samples(self.root, split)
        self.samples = filter_by_region(self.root, split, pairs, _as_list(regions), _as_list(exclude_regions))
        if names is not None:
            wanted = set(names)
            unknown = sorted(wanted - {img.stem for img, _ in self.samples})
            if unknown:
                raise InputError(f"{self.root}: split {split!r} has no sample named {unknown[0]!r} "
                                 f"({len(unknown)} of {len(wanted)} requested names are missing)")
            self.samples = [(img, ann) for img, ann in self.samples if img.stem in wanted]
        self.sizes: list[tuple[int, int]] = []
        for img_path, ann_path in self.samples:
            size = read_image_header(img_path, in_channels)
            ann_size = read_label_header(ann_path)
            if size != ann_size:
                raise InputError(
                    f"{ann_path}: label is {ann_size[0]}x{ann_size[1]} (H x W) but image {img_path.name} is "
                    f"{size[0]}x{size[1]}; expected equal sizes"
                )
            self.sizes.append(size)
        log.debug("split %r of %s: %d samples", split, self.root, len(self.samples))

    @property
    def names(self) -> list[str]:
        """The sample names (file stems), in dataset order."""
        return [img.stem for img, _ in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def _load_label(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        img_path, ann_path = self.samples[index]
        label = read_label(ann_path)
        if label.shape != self.sizes[index]:
            raise InputError(
                f"{ann_path}: label shape {label.shape} differs from image {img_path.name} shape "
                f"{(self.in_channels, *self.sizes[index])}; expected equal height and width"
            )
        return label, label_histogram(label, ann_path, self.num_classes)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Load sample ``index`` without the transform: float32 (C, H, W) image and uint8 (H, W) label, both checked."""
        img_path, ann_path = self.samples[index]
        image = read_image(img_path, self.in_channels)
        label, _ = self._load_label(index)
        if image.shape[1:] != label.shape:
            raise InputError(
                f"{img_path}: image shape {image.shape} and label {ann_path.name} shape {label.shape} "
                "differ in height/width"
            )
        return image, label

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.load(index)
        x = torch.from_numpy(image)
        y = torch.from_numpy(label.astype(np.int64))
        if self.transform is not None:
            x, y = self.transform(x, y)
        return x, y

    def check_all(self, progress: bool = False) -> int:
        """Load every sample once (values included) and raise InputError at the first bad file; return the count."""
        for index in progress_bar(range(len(self)), enabled=progress, desc=f"checking {self.split}", leave=False):
            self.load(index)
        log.info("checked %d samples of split %r in %s", len(self), self.split, self.root)
        return len(self)

    def class_counts(self) -> np.ndarray:
        """Per-class pixel counts of the split as an int64 array of length ``num_classes`` (ignore pixels excluded)."""
        total = np.zeros(256, dtype=np.int64)
        for index in range(len(self)):
            total += self._load_label(index)[1]
        return total[: self.num_classes].copy()
