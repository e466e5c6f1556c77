"""Segmentation metrics against scikit-learn, the absent-class rule, and the table/plot writers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    jaccard_score,
    precision_score,
    recall_score,
)

from dunemap.errors import ConfigError, InputError
from dunemap.metrics import ConfusionMatrix, format_table, metrics_from_matrix
from dunemap.products.figures import plot_confusion_matrix

K = 6
IGNORE = 255


def _random_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Truth/prediction ids over K classes with ignore pixels; class 4 absent from both,
    class 3 only predicted, class 5 only in truth."""
    rng = np.random.default_rng(seed)
    target = rng.integers(0, K, size=(3, 17, 19))
    pred = np.where(rng.random(target.shape) < 0.6, target, rng.integers(0, K, size=target.shape))
    target[target == 4] = 0
    pred[pred == 4] = 1
    target[target == 3] = 2
    pred[pred == 5] = 0
    target[rng.random(target.shape) < 0.1] = IGNORE
    return pred.astype(np.int64), target.astype(np.uint8)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_sklearn(seed: int) -> None:
    pred, target = _random_case(seed)
    cm = ConfusionMatrix(K)
    cm.update(pred, target)
    m = cm.compute()

    keep = target != IGNORE
    t, p = target[keep].astype(np.int64), pred[keep]
    labels = list(range(K))
    np.testing.assert_array_equal(cm.matrix, confusion_matrix(t, p, labels=labels))
    assert m.n_pixels == keep.sum()

    present = sorted(set(t.tolist()) | set(p.tolist()))
    assert present == [0, 1, 2, 3, 5]
    np.testing.assert_array_equal(m.present, [i in present for i in labels])

    assert m.oa == pytest.approx(accuracy_score(t, p))
    assert m.kappa == pytest.approx(cohen_kappa_score(t, p))
    np.testing.assert_allclose(m.per_class_iou[present], jaccard_score(t, p, labels=present, average=None))
    assert m.miou == pytest.approx(jaccard_score(t, p, labels=present, average="macro"))
    np.testing.assert_allclose(m.per_class_f1[present], f1_score(t, p, labels=present, average=None, zero_division=0))
    assert m.mf1 == pytest.approx(f1_score(t, p, labels=present, average="macro", zero_division=0))
    np.testing.assert_allclose(
        m.per_class_precision[present], precision_score(t, p, labels=present, average=None, zero_division=0)
    )
    np.testing.assert_allclose(
        m.per_class_recall[present], recall_score(t, p, labels=present, average=None, zero_division=0)
    )

    # class 4 is absent from both: NaN everywhere and outside the means
    for arr in (m.per_class_iou, m.per_class_precision, m.per_class_recall, m.per_class_f1):
        assert math.isnan(arr[4])
    # class 3 only predicted, class 5 only true: IoU 0 and counted in the mean
    assert m.per_class_iou[3] == 0.0 and m.per_class_iou[5] == 0.0
    assert m.miou == pytest.approx(np.mean(m.per_class_iou[present]))
    assert m.miou < np.nanmean(np.where(m.per_class_iou > 0, m.per_class_iou, np.nan))


def test_torch_inputs_chunked_updates_and_merge_match_one_update() -> None:
    pred, target = _random_case(3)
    whole = ConfusionMatrix(K)
    whole.update(pred, target)

    a, b = ConfusionMatrix(K), ConfusionMatrix(K)
    a.update(torch.from_numpy(pred[:1]), torch.from_numpy(target[:1].astype(np.int64)))
    b.update(torch.from_numpy(pred[1:]), torch.from_numpy(target[1:]))
    a += b
    np.testing.assert_array_equal(a.matrix, whole.matrix)
    assert a.merge(ConfusionMatrix(K)) is a

    a.reset()
    assert a.n_pixels == 0 and not a.matrix.any()
    with pytest.raises(InputError, match="cannot merge a 5-class matrix"):
        a.merge(ConfusionMatrix(5))


def test_out_of_range_ids_raise_and_ignore_is_dropped() -> None:
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 1, 2, 0]), np.array([0, 255, 2, 255]))
    assert cm.n_pixels == 2
    with pytest.raises(InputError, match=r"target holds class id\(s\) 3, 7 outside \[0, 3\)"):
        cm.update(np.array([0, 0, 0]), np.array([3, 7, 1]))
    with pytest.raises(InputError, match=r"target holds class id\(s\) -1 "):
        cm.update(np.array([0]), np.array([-1]))
    with pytest.raises(InputError, match=r"prediction holds class id\(s\) 9 "):
        cm.update(np.array([9, 9]), np.array([0, 255]))
    with pytest.raises(InputError, match=r"prediction shape \(2,\) differs from target shape \(3,\)"):
        cm.update(np.zeros(2, dtype=int), np.zeros(3, dtype=int))
    with pytest.raises(InputError, match="dtype is float32"):
        cm.update(np.zeros(2, dtype=np.float32), np.zeros(2, dtype=int))
    assert cm.n_pixels == 2  # failed updates count nothing


def test_degenerate_matrices() -> None:
    single = metrics_from_matrix(np.array([[5, 0], [0, 0]]))
    assert single.oa == 1.0 and single.miou == 1.0 and math.isnan(single.kappa)
    assert single.present.tolist() == [True, False]

    empty = ConfusionMatrix(4).compute()
    assert all(math.isnan(v) for v in (empty.oa, empty.miou, empty.kappa, empty.mf1))
    assert not empty.present.any() and empty.n_pixels == 0

    perfect = metrics_from_matrix(np.diag([3, 4, 5]))
    assert perfect.kappa == pytest.approx(1.0) and perfect.mf1 == pytest.approx(1.0)
    with pytest.raises(InputError, match="expected square"):
        metrics_from_matrix(np.zeros((2, 3)))


def test_to_dict_is_strict_json() -> None:
    pred, target = _random_case(4)
    cm = ConfusionMatrix(K)
    cm.update(pred, target)
    names = [f"c{i}" for i in range(K)]
    d = json.loads(json.dumps(cm.compute().to_dict(names), allow_nan=False))
    assert d["per_class"]["c4"] == {
        "iou": None, "precision": None, "recall": None, "f1": None, "present": False, "support": 0
    }
    assert d["per_class"]["c5"]["iou"] == 0.0 and d["per_class"]["c5"]["support"] > 0
    assert d["confusion_matrix"] == cm.matrix.tolist()
    assert d["n_pixels"] == cm.n_pixels
    with pytest.raises(InputError, match="5 class names given for 6 classes"):
        cm.compute().to_dict(names[:5])


def test_format_table_aligned() -> None:
    pred, target = _random_case(5)
    cm = ConfusionMatrix(K)
    cm.update(pred, target)
    m = cm.compute()
    names = ["interdune", "crescentic", "linear", "star", "dome", "sand sheet"]
    table = format_table(m, names)
    lines = table.splitlines()
    assert len(lines) == 2 + K + 2
    rows = lines[2 : 2 + K]
    assert [r.split("  ")[0].strip() for r in rows] == names
    # right-aligned numeric columns end at the same offset as the header's
    assert {len(r) for r in rows} == {len(lines[0])}
    dome = rows[4].split()
    assert dome[1:5] == ["-", "-", "-", "-"] and dome[5] == "0"
    assert f"{m.per_class_iou[0]:.4f}" in rows[0]
    assert lines[-1].startswith(f"OA {m.oa:.4f}  mIoU {m.miou:.4f}  kappa {m.kappa:.4f}  mF1 {m.mf1:.4f}")
    assert "classes 5/6" in lines[-1]


@pytest.mark.parametrize("normalize", ["true", "none"])
def test_plot_confusion_matrix_writes_png(tmp_path, normalize: str) -> None:
    matrix = np.array([[50, 3, 0], [4, 20, 1], [0, 0, 0]])
    out = plot_confusion_matrix(matrix, ["a", "b", "c"], tmp_path / "sub" / "cm.png", normalize=normalize)
    assert out == tmp_path / "sub" / "cm.png"
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100
    assert [p.name for p in out.parent.iterdir()] == ["cm.png"]


def test_plot_confusion_matrix_rejects_bad_options(tmp_path) -> None:
    with pytest.raises(ConfigError, match="unknown normalization 'rows'; valid: all, none, pred, true"):
        plot_confusion_matrix(np.eye(2, dtype=int), ["a", "b"], tmp_path / "cm.png", normalize="rows")
    with pytest.raises(InputError, match="3 class names given for 2 classes"):
        plot_confusion_matrix(np.eye(2, dtype=int), ["a", "b", "c"], tmp_path / "cm.png")
    assert not any(tmp_path.iterdir())
