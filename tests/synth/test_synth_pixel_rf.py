"""Class identity lives in spatial pattern: a per-pixel random forest stays far from solving the task."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.ensemble import RandomForestClassifier

from dunemap.data.seed_layout import list_samples
from dunemap.synth.dataset import write_dataset


def _pixels(root: Path, splits: tuple[str, ...], per_tile: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for split in splits:
        for img, ann in list_samples(root, split):
            x = np.load(img).reshape(64, -1)
            y = np.asarray(Image.open(ann)).reshape(-1)
            idx = rng.choice(y.size, per_tile, replace=False)
            idx = idx[y[idx] != 255]
            xs.append(x[:, idx].T)
            ys.append(y[idx])
    return np.concatenate(xs), np.concatenate(ys)


# Dataset seeds 0-4 gave mIoU 0.330, 0.297, 0.300, 0.339, 0.310: at least 0.11 inside either bound on each.
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pixel_random_forest_on_a_block_split_dataset_stays_well_below_half_miou(tmp_path, seed: int):
    # Train and test tiles come from the same scenes (spatial blocks), so scene-wide materials and wind
    # are shared: the easiest setting for a per-pixel classifier.
    root = write_dataset(tmp_path / "ds", scenes_per_region=1, scene_size=192, tile=64, block_tiles=1, seed=seed,
                         region_px=96, split=(0.6, 0.2, 0.2))
    x_train, y_train = _pixels(root, ("train",), 400, 0)
    x_test, y_test = _pixels(root, ("val", "test"), 400, 1)
    rf = RandomForestClassifier(n_estimators=40, min_samples_leaf=2, n_jobs=1, random_state=0).fit(x_train, y_train)
    pred = rf.predict(x_test)
    ious = [np.sum((pred == c) & (y_test == c)) / np.sum((pred == c) | (y_test == c)) for c in np.unique(y_test)]
    miou = float(np.mean(ious))
    # The embeddings carry information (far better than chance) but a pixel alone does not give the class.
    assert 0.08 < miou < 0.45, miou
