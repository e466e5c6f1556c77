"""``torchrun`` with two CPU ranks (gloo on loopback) trains like one process, and only rank 0 writes.

The comparison is 2 ranks x batch 2 against 1 process x batch 4 with the same seed: DDP averages the
two ranks' gradients, so each step is the one-process step on the same 4 tiles except for three
things: which tiles share a step (DistributedSampler vs RandomSampler order), the augmentation and
drop-path draws, and the decoder's BatchNorm statistics (over 2 tiles per rank instead of 4). Those
are the same kind of difference as changing the seed, and after 12 epochs with the learning rate
decayed to near zero both runs sit on the same plateau: on this data, single-process runs with
seeds 3 and 4 ended 0.006 val mIoU apart, while at epochs 1-6 such runs differ by up to 0.36. With seeds
3, 4 and 5 the one-process / 2-rank pairs ended at 0.929 / 0.921, 0.923 / 0.916 and 0.920 / 0.922 (0.008,
0.007 and 0.001 apart). So "the same" means: both learned (val mIoU >= 0.85, 0.066 below the lowest of those)
and they agree within 0.05, five times the seed-to-seed spread yet well below what a broken run or an early
epoch gives.

Everything that should be *exact* is asserted exactly: each val pixel counted once over both ranks,
the stored val confusion matrix equal to the one the saved model gives, files and log lines written
by rank 0 alone, and a 2-rank run stopped and resumed ending with the same weights as an unbroken one.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Subset

from dunemap.cli import main
from dunemap.data.dataset import SeedLayoutDataset
from dunemap.metrics import ConfusionMatrix
from dunemap.models.checkpoint import load_checkpoint
from dunemap.training.distributed import shard_indices

BANDS, CLASSES, TILE = 16, 4, 64  # the tiny dataset of tests/conftest.py
N_VAL = 3  # odd on purpose: DistributedSampler would pad rank 1's shard with a repeat of tile 0
EPOCHS = 12
MIOU_TOLERANCE = 0.05
OUTPUTS = {"best_model.pth", "last.pth", "metrics.csv", "metrics.json", "config.yaml"}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _train_args(data: Path, save: Path, batch_size: int, epochs: int, *extra: str) -> list[str]:
    return [
        "train", "--data-root", str(data), "--save-dir", str(save), "--catalog", str(data / "catalog.yaml"),
        "--model", "mit_tiny", "--bands", str(BANDS), "--epochs", str(epochs), "--batch-size", str(batch_size),
        "--lr", "5e-3", "--text", "random", "--seed", "3", "--device", "cpu", "--precision", "fp32",
        "--no-progress", *extra,
    ]


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1")


def _run(cmd: list[str], ok: bool = True) -> subprocess.CompletedProcess:
    """Run ``cmd``; it must succeed (``ok``) or fail."""
    proc = subprocess.run(cmd, check=False, env=_env(), capture_output=True, text=True, timeout=300)
    assert (proc.returncode == 0) == ok, f"{cmd}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    return proc


def _one_process(args: list[str]) -> None:
    """The one-process run, in this process through the CLI's ``main`` on one torch thread, as each rank runs
    (OMP_NUM_THREADS=1); the command itself runs as a real process under torchrun."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)


def _torchrun(args: list[str], log_dir: Path, ok: bool = True) -> subprocess.CompletedProcess:
    """Two ranks on this machine; each rank's stdout/stderr go to LOG_DIR/<run id>/attempt_0/<rank>/."""
    return _run([
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
        "--master-port", str(_free_port()), "--log-dir", str(log_dir), "--redirects", "3",
        "-m", "dunemap", *args,
    ], ok)


def _rank_log(log_dir: Path, rank: int, stream: str = "stderr") -> str:
    (path,) = log_dir.glob(f"*/attempt_0/{rank}/{stream}.log")
    return path.read_text()


def _val_miou(save: Path) -> list[float]:
    return [row["val_miou"] for row in json.loads((save / "metrics.json").read_text())]


def _confusion_of_saved_model(data: Path, checkpoint: Path) -> np.ndarray:
    """The val confusion matrix of ``checkpoint``'s model, batched exactly as the two ranks batch it."""
    model = load_checkpoint(checkpoint).model.eval()
    val = SeedLayoutDataset(data, "val", num_classes=CLASSES, in_channels=BANDS)
    cm = ConfusionMatrix(CLASSES)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank ran (OMP_NUM_THREADS=1)
    try:
        with torch.inference_mode():
            for rank in range(2):
                for x, y in DataLoader(Subset(val, shard_indices(len(val), rank, 2)), batch_size=2):
                    cm.update(model(x).argmax(1), y)
    finally:
        torch.set_num_threads(threads)
    return cm.matrix


@pytest.mark.parametrize(("n", "world_size"), [(3, 2), (7, 3), (2, 4), (0, 2), (8, 1)])
def test_shard_indices_cover_every_item_once(n: int, world_size: int) -> None:
    shards = [shard_indices(n, rank, world_size) for rank in range(world_size)]
    assert sorted(i for shard in shards for i in shard) == list(range(n))
    assert max(len(s) for s in shards) - min(len(s) for s in shards) <= 1


def test_two_ranks_train_like_one_process_and_only_rank0_writes(make_tiny_dataset, tmp_path: Path) -> None:
    data = make_tiny_dataset(tmp_path / "data", n_train=16, n_val=N_VAL, n_test=0)
    one, two, logs = tmp_path / "one", tmp_path / "two", tmp_path / "logs"
    _one_process(_train_args(data, one, 4, EPOCHS))
    _torchrun(_train_args(data, two, 2, EPOCHS), logs)

    # Same result within the tolerance justified in the module docstring, and both really learned.
    miou_one, miou_two = _val_miou(one)[-1], _val_miou(two)[-1]
    assert min(miou_one, miou_two) >= 0.85, (miou_one, miou_two)
    assert abs(miou_one - miou_two) <= MIOU_TOLERANCE, (miou_one, miou_two)

    # Val metrics are reduced over both ranks, and each val pixel is counted exactly once.
    labels = np.stack([np.asarray(Image.open(p)) for p in sorted((data / "ann_dir" / "val").glob("*.png"))])
    val = load_checkpoint(two / "last.pth").metrics["val"]
    assert val["n_pixels"] == N_VAL * TILE * TILE
    assert [val["per_class"][f"blob_{k}"]["support"] for k in range(CLASSES)] == np.bincount(
        labels.ravel(), minlength=CLASSES).tolist()
    # Both ranks scored one and the same model, the one rank 0 saved (synced gradients and BatchNorm buffers).
    np.testing.assert_array_equal(np.array(val["confusion_matrix"]), _confusion_of_saved_model(data, two / "last.pth"))

    # Only rank 0 writes: exactly the usual outputs (no second writer's temp files), epoch logs on rank 0 only.
    assert {p.name for p in two.iterdir()} == OUTPUTS
    assert [row["epoch"] for row in json.loads((two / "metrics.json").read_text())] == list(range(1, EPOCHS + 1))
    rank0, rank1 = _rank_log(logs, 0), _rank_log(logs, 1)
    assert f"checked {N_VAL} samples of split 'val'" in rank1  # rank 1 ran and its log was captured
    assert [f"epoch {e}/{EPOCHS} " in rank0 for e in range(1, EPOCHS + 1)] == [True] * EPOCHS
    assert "dunemap.training.loop: epoch" not in rank1


def test_two_rank_run_resumes_to_the_same_weights(make_tiny_dataset, tmp_path: Path) -> None:
    data = make_tiny_dataset(tmp_path / "data", n_train=8, n_val=N_VAL, n_test=0)
    full, part = tmp_path / "full", tmp_path / "part"
    _torchrun(_train_args(data, full, 2, 4), tmp_path / "logs_full")
    _torchrun(_train_args(data, part, 2, 4, "--stop-after-epochs", "2"), tmp_path / "logs_part")
    assert len(json.loads((part / "metrics.json").read_text())) == 2
    _torchrun(_train_args(data, part, 2, 4, "--resume"), tmp_path / "logs_resume")

    assert _val_miou(part) == _val_miou(full)
    a = load_checkpoint(full / "last.pth").model.state_dict()
    b = load_checkpoint(part / "last.pth").model.state_dict()
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert "resuming from" in _rank_log(tmp_path / "logs_resume", 0)


def test_a_diverged_two_rank_run_stops_every_rank_naming_epoch_and_step(make_tiny_dataset, tmp_path: Path) -> None:
    """Under DDP one non-finite loss stops the run (a rank skipping a step would desynchronise the gradients):
    at lr 1e6 the first step blows the shared weights up and both ranks stop at step 2 with the one-line error."""
    data = make_tiny_dataset(tmp_path / "data", n_train=4, n_val=1, n_test=0)
    run, logs = tmp_path / "run", tmp_path / "logs"
    _torchrun(_train_args(data, run, 1, 2, "--lr", "1e6"), logs, ok=False)
    for rank in (0, 1):
        log = _rank_log(logs, rank)
        errors = [line for line in log.splitlines() if line.startswith("dunemap: error:")]
        assert len(errors) == 1 and "Traceback" not in log, log[-3000:]
        assert re.search(r"training diverged: the loss was not finite \(NaN or inf\) for 1 steps in a row, last at "
                         r"epoch 1 step 2; lower --lr", errors[0]), errors[0]
    assert not list(run.glob("*.pth"))  # stopped inside the first epoch: nothing was saved
