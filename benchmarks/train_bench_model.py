"""Train the mit_b2 text-fused model that ``bench_mapping.py`` maps with, on synthetic dune fields.

Usage::

    python benchmarks/train_bench_model.py [--out benchmarks/_weights] [--budget-min 45] [--epochs 40]

Mapping agreement between two window designs only means something with weights that have learnt
the classes: random weights give near-ties everywhere, which flip with window placement. This
writes a synthetic dataset (``dunemap.synth.dataset.write_dataset``: five regions x two 512 px
scenes cut into 256 px tiles), then trains ``mit_b2`` with the catalog descriptions encoded by the
bundled MiniLM (``dunemap.training.train``, bf16 on a CPU that has it) one epoch per call with
``resume``, stopping when the next epoch would overrun ``--budget-min`` minutes of CPU time (CPU, not
wall, time, so that a machine shared with other work gets the same training). The best checkpoint is
copied to ``OUT/<model>_synth.pth``; ``OUT/train_bench_model.json`` records the run. Re-running
continues an unfinished run (the dataset is kept, training resumes from ``last.pth``).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent / "_weights"
log = logging.getLogger("train_bench_model")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for data, run and weights")
    parser.add_argument("--model", default="mit_b2")
    parser.add_argument("--epochs", type=int, default=40, help="epochs of the poly learning-rate schedule")
    parser.add_argument("--budget-min", type=float, default=45.0,
                        help="CPU minutes (this process, all threads): stop before an epoch that would overrun them")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=6e-4)
    parser.add_argument("--max-steps-per-epoch", type=int, default=None)
    parser.add_argument("--scene-size", type=int, default=512)
    parser.add_argument("--scenes-per-region", type=int, default=2)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    import torch

    from dunemap.io.atomic import atomic_path
    from dunemap.synth.dataset import write_dataset
    from dunemap.training import TrainConfig, train
    from dunemap.training.loop import BEST, LAST

    torch.set_num_threads(args.threads)
    t_start, cpu_start = time.perf_counter(), time.process_time()
    out = args.out
    data, run = out / "data", out / "run"
    if not (data / "manifest.csv").exists():
        write_dataset(data, scenes_per_region=args.scenes_per_region, scene_size=args.scene_size, tile=args.tile,
                      seed=args.seed, block_tiles=1, overwrite=True)
    log.info("dataset ready in %.0f s", time.perf_counter() - t_start)

    budget = args.budget_min * 60.0
    epoch_seconds: list[float] = []
    epoch_cpu: list[float] = []
    while True:
        done = len(json.loads((run / "metrics.json").read_text())) if (run / "metrics.json").exists() else 0
        if done >= args.epochs:
            break
        used = time.process_time() - cpu_start
        if epoch_cpu and used + max(epoch_cpu) > budget:
            log.info("stopping after %d epochs: the next would overrun the %.0f min budget", done, args.budget_min)
            break
        t0, c0 = time.perf_counter(), time.process_time()
        result = train(TrainConfig(
            data_root=data, save_dir=run, model=args.model, epochs=args.epochs, batch_size=args.batch_size,
            lr=args.lr, seed=args.seed, precision=args.precision, device="cpu", progress=False,
            max_steps_per_epoch=args.max_steps_per_epoch, resume=(run / LAST).exists(), stop_after_epochs=1,
            check_data=done == 0,
        ))
        epoch_seconds.append(time.perf_counter() - t0)
        epoch_cpu.append(time.process_time() - c0)
        log.info("epoch %d: %.0f s wall, %.0f s CPU, %s", len(result.history), epoch_seconds[-1], epoch_cpu[-1],
                     result.history[-1])

    history = json.loads((run / "metrics.json").read_text())
    weights = out / f"{args.model}_synth.pth"
    with atomic_path(weights) as tmp:
        shutil.copyfile(run / BEST, tmp)
    record = {"weights": str(weights), "model": args.model, "epochs_run": len(history), "epoch_seconds": epoch_seconds,
              "epoch_cpu_seconds": epoch_cpu, "cpu_seconds": time.process_time() - cpu_start,
              "history": history, "args": {k: str(v) for k, v in vars(args).items()},
              "seconds": time.perf_counter() - t_start}
    with atomic_path(out / "train_bench_model.json") as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    log.info("wrote %s (best val mIoU %.4f)", weights, max((h["val_miou"] for h in history), default=float("nan")))


if __name__ == "__main__":
    main()
