"""``dunemap train`` and ``dunemap evaluate`` driven as a user would, on real files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from recompute import hashes, sklearn_scores

from dunemap.cli import main
from dunemap.models.checkpoint import load_checkpoint


def _train_args(data: Path, save: Path, *extra: str) -> list[str]:
    return ["train", "--data-root", str(data), "--save-dir", str(save), "--model", "mit_tiny", "--bands", "16", "--epochs", "1",
            "--batch-size", "4", "--text", "random", "--catalog", str(data / "catalog.yaml"), "--no-progress",
            "--device", "cpu", *extra]


def _corrupt(data: Path, case: str) -> str:
    """Break one file of a valid dataset; return the text the error must contain."""
    img, ann = data / "img_dir" / "train", data / "ann_dir" / "train"
    if case == "bands":
        np.save(img / "train_00.npy", np.zeros((15, 64, 64), np.float32))
        return r"train_00.npy.*15.*16"
    if case == "dtype":
        np.save(img / "train_00.npy", np.zeros((16, 64, 64), np.int32))
        return r"train_00.npy.*int32"
    if case == "nan":
        x = np.load(img / "train_01.npy")
        x[0, 3, 3] = np.nan
        np.save(img / "train_01.npy", x)
        return r"train_01.npy.*NaN"
    if case == "size":
        Image.fromarray(np.zeros((60, 64), np.uint8)).save(ann / "train_02.png")
        return r"train_02.*(size|differ|x)"
    if case == "label_id":
        Image.fromarray(np.full((64, 64), 7, np.uint8)).save(ann / "train_03.png")
        return r"train_03.png.*7"
    if case == "missing_split":
        shutil.rmtree(data / "img_dir" / "val")
        return r"val"
    if case == "no_label":
        (ann / "train_04.png").unlink()
        return r"train_04"
    if case == "corrupt":
        (img / "train_05.npy").write_bytes(b"\x93NUMPY garbage")
        return r"train_05.npy"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["bands", "dtype", "nan", "size", "label_id", "missing_split", "no_label", "corrupt"])
def test_each_bad_input_is_a_one_line_error_and_exit_1(case: str, tmp_path: Path, capsys, make_tiny_dataset) -> None:
    data = make_tiny_dataset(tmp_path / "data", n_train=6, n_val=1, n_test=1)
    pattern = _corrupt(data, case)
    code = main(_train_args(data, tmp_path / "run"))
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert len(err.splitlines()) == 1 and err.startswith("dunemap: error: "), err
    assert __import__("re").search(pattern, err), err
    assert not (tmp_path / "run" / "last.pth").exists()


def test_train_then_evaluate_in_real_processes(tmp_path: Path, make_tiny_dataset) -> None:
    data = make_tiny_dataset(tmp_path / "data", n_train=8, n_val=2, n_test=2)
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "dunemap", *_train_args(data, run, "--epochs", "2")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    history = json.loads((run / "metrics.json").read_text())
    best = max(range(len(history)), key=lambda i: history[i]["val_miou"])
    assert f"best val mIoU {history[best]['val_miou']:.4f} at epoch {best + 1};" in proc.stdout
    before = hashes(data, run)
    proc = subprocess.run([sys.executable, "-m", "dunemap", "evaluate", "--data-root", str(data), "--weights",
                           str(run / "best_model.pth"), "--split", "test", "--no-progress", "--device", "cpu"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "mIoU" in proc.stdout and "blob_0" in proc.stdout
    report = json.loads((tmp_path / "eval_run-best_model_test" / "metrics.json").read_text())
    assert report["split"] == "test" and report["n_samples"] == 2
    # the scores recomputed from the files: the saved model's argmax on the test tiles against their labels
    model = load_checkpoint(run / "best_model.pth").model.eval()
    x = torch.from_numpy(np.stack([np.load(p) for p in sorted((data / "img_dir" / "test").glob("*.npy"))]))
    truth = np.stack([np.asarray(Image.open(p)) for p in sorted((data / "ann_dir" / "test").glob("*.png"))])
    with torch.inference_mode():
        pred = model(x).argmax(1).numpy()
    expected = sklearn_scores(pred, truth, 4)
    assert report["confusion_matrix"] == expected["confusion_matrix"].tolist()
    for key in ("oa", "miou", "kappa"):
        assert report["metrics"][key] == pytest.approx(expected[key], abs=1e-9), key
    assert hashes(data, run) == before  # evaluating changed none of its inputs
    assert (tmp_path / "eval_run-best_model_test" / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (run / "eval_test").exists()  # never into the weights' folder


def test_evaluate_reports_a_missing_checkpoint(tmp_path: Path, capsys, make_tiny_dataset) -> None:
    data = make_tiny_dataset(tmp_path / "data", n_train=1, n_val=1, n_test=1)
    assert main(["evaluate", "--data-root", str(data), "--weights", str(tmp_path / "nope.pth")]) == 1
    assert "nope.pth: checkpoint not found" in capsys.readouterr().err


def test_evaluate_scores_in_scene_and_new_scene_tiles_side_by_side(tmp_path: Path, make_tiny_dataset, capsys) -> None:
    from dunemap.data.manifest import TileRecord, write_manifest

    data = make_tiny_dataset(tmp_path / "data", n_train=4, n_val=1, n_test=3)
    # Scene "a" gave the training tiles and test_00; test_01 and test_02 come from scene "b", never trained on.
    scene = {"test_01": "b", "test_02": "b"}
    records = [TileRecord(name=f"{split}_{i:02d}", split=split, region="r", source=scene.get(f"{split}_{i:02d}", "a"))
               for split, n in (("train", 4), ("val", 1), ("test", 3)) for i in range(n)]
    write_manifest(data, records)
    run = tmp_path / "run"
    assert main([*_train_args(data, run)]) == 0
    out = tmp_path / "eval"
    capsys.readouterr()
    # in this process: test_train_then_evaluate_in_real_processes runs the command as a real process
    assert main(["evaluate", "--data-root", str(data), "--weights", str(run / "best_model.pth"), "--out-dir", str(out),
                 "--no-progress", "--device", "cpu", "--precision", "fp32"]) == 0
    printed = capsys.readouterr().out
    assert " in-scene tiles: OA " in printed and "new-scene tiles: OA " in printed
    report = json.loads((out / "metrics.json").read_text())
    groups = report["by_scene"]
    assert groups["in_scene"]["n_samples"] == 1 and groups["new_scene"]["n_samples"] == 2
    total = np.asarray(groups["in_scene"]["confusion_matrix"]) + np.asarray(groups["new_scene"]["confusion_matrix"])
    assert total.tolist() == report["confusion_matrix"]  # the split's score is the two groups' together
