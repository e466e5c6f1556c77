"""The training loop, readable top to bottom: data, text, model, AdamW + poly decay, epochs, checkpoints.

Determinism: every epoch reseeds the global torch RNG from (seed, epoch) and shuffles with a
generator seeded the same way, so a run resumed from ``last.pth`` at an epoch boundary draws the
same batches, augmentations and dropout masks as an uninterrupted one and ends with the same weights.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Subset

from dunemap.data.dataset import SeedLayoutDataset
from dunemap.data.seed_layout import IGNORE_INDEX
from dunemap.data.transforms import build_augmentation
from dunemap.errors import CheckpointError, ConfigError, DunemapError
from dunemap.io.atomic import atomic_path
from dunemap.io.progress import progress_bar
from dunemap.knowledge.catalog import Catalog, load_catalog
from dunemap.metrics import ConfusionMatrix, metrics_from_matrix
from dunemap.models import ARCHITECTURES, UNetConfig, build_model, model_config
from dunemap.models.checkpoint import load_checkpoint, save_checkpoint
from dunemap.registry import choose
from dunemap.runtime import ModelSpec, Predictor, autocast, confusion_over, resolve_precision
from dunemap.training.config import CONFIG_NAME, TrainConfig
from dunemap.training.distributed import (
    DistContext,
    all_reduce_sum,
    barrier,
    broadcast_buffers,
    init_distributed,
    shard_indices,
    shutdown,
)
from dunemap.training.finetune import FineTune, check_finetune_options, start_finetune
from dunemap.training.objective import class_loss_weights, ignore_margin, poly_factor, warmup_factor, weight_average
from dunemap.training.text import resolve_text
from dunemap.trust.fit import calibrate_checkpoint

log = logging.getLogger(__name__)

BEST, LAST = "best_model.pth", "last.pth"
RUN_FILES = (BEST, LAST, "metrics.csv", "metrics.json", CONFIG_NAME)  # what a run writes into its save dir
TENSORBOARD_DIR = "tensorboard"  # event files of --tensorboard, under the save dir
MAX_NONFINITE_STEPS = 3  # consecutive steps with a NaN/inf loss (skipped) before training stops
# options that may differ on --resume without changing the run's results (epochs is handled apart)
RESUME_FREE = ("save_dir", "resume", "overwrite", "stop_after_epochs", "check_data", "progress", "num_workers",
               "device", "precision", "epochs", "calibrate", "tensorboard")


class TrainingDivergedError(DunemapError, FloatingPointError):
    """The loss stopped being finite: the run diverged."""


@dataclass
class TrainResult:
    best_checkpoint: Path
    last_checkpoint: Path
    best_val_miou: float
    best_epoch: int
    history: list[dict] = field(default_factory=list)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def build_datasets(config: TrainConfig, num_classes: int, in_channels: int) -> tuple[SeedLayoutDataset, SeedLayoutDataset]:
    kw = dict(num_classes=num_classes, in_channels=in_channels, regions=config.regions,
              exclude_regions=config.holdout_regions)
    train = SeedLayoutDataset(config.data_root, "train", transform=build_augmentation(config.augment), **kw)
    val = SeedLayoutDataset(config.data_root, "val", **kw)
    return train, val


def _write_history(save_dir: Path, history: list[dict]) -> None:
    with atomic_path(save_dir / "metrics.json") as tmp:
        tmp.write_text(json.dumps(history, indent=2))
    keys = list(history[0]) if history else []
    with atomic_path(save_dir / "metrics.csv") as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(history)


def train(config: TrainConfig) -> TrainResult:
    """Train a (text-fused) SegFormer on a seed-layout dataset and keep the best checkpoint by val mIoU."""
    ctx = init_distributed(config.device)
    try:
        return _train(config, ctx)
    finally:
        shutdown(ctx)


def check_train_options(config: TrainConfig) -> None:
    """Refuse option values that cannot train (each named as the command line spells it)."""
    if config.epochs < 1 or config.batch_size < 1:
        raise ConfigError(f"epochs and batch size must be positive, got {config.epochs}, {config.batch_size}")
    if config.loss_margin < 0:
        raise ConfigError(f"--loss-margin {config.loss_margin} must be at least 0")
    if not (math.isfinite(config.ema_decay) and 0 <= config.ema_decay < 1):
        raise ConfigError(f"--ema-decay {config.ema_decay} must be at least 0 (off) and below 1")
    for flag, value in (("--lr", config.lr), ("--weight-decay", config.weight_decay), ("--poly-power", config.poly_power)):
        if not math.isfinite(value) or value < 0 or (flag == "--lr" and value == 0):
            raise ConfigError(f"{flag} {value} must be a finite number {'above' if flag == '--lr' else 'of at least'} 0")
    for flag, value in (("--warmup-steps", config.warmup_steps), ("--num-workers", config.num_workers),
                        ("--max-steps-per-epoch", config.max_steps_per_epoch),
                        ("--stop-after-epochs", config.stop_after_epochs)):
        least = 0 if flag in ("--warmup-steps", "--num-workers") else 1
        if value is not None and value < least:
            raise ConfigError(f"{flag} {value} must be at least {least}")
    check_finetune_options(config)


def _guard_loss(loss: torch.Tensor, streak: int, epoch: int, step: int, limit: int = MAX_NONFINITE_STEPS) -> int:
    """The count of consecutive non-finite losses after this step; training stops when it reaches ``limit``.

    A step whose loss is NaN or inf is skipped (no weight update), so a rare bad batch does not
    poison the weights; several in a row mean the run diverged. Under DDP the limit is 1: one rank
    skipping a step would pair its gradients with another rank's next step.
    """
    if bool(torch.isfinite(loss.detach())):
        return 0
    streak += 1
    if streak >= limit:
        raise TrainingDivergedError(
            f"training diverged: the loss was not finite (NaN or inf) for {streak} steps in a row, last at epoch "
            f"{epoch + 1} step {step + 1}; lower --lr or check the data (no checkpoint of this epoch was written)")
    log.warning("epoch %d step %d: the loss is not finite; step skipped", epoch + 1, step + 1)
    return streak


def _new_model(config: TrainConfig, catalog: Catalog) -> tuple[torch.nn.Module, dict]:
    """A freshly initialised model of ``config`` with its class text, and the text's provenance."""
    text, text_source = resolve_text(config, catalog)
    _seed_everything(config.seed)
    overrides = dict(config.model_overrides)
    overrides.update(in_channels=config.in_channels, num_classes=catalog.num_classes)
    if isinstance(choose(ARCHITECTURES, config.model, "model"), UNetConfig):
        if text is not None:
            raise ConfigError(f"model {config.model!r} uses no class texts; train it with --text none")
    else:
        overrides.update(fusion_stage=config.fusion_stage, head=config.head,
                         fusion="none" if text is None or config.head == "text" else "cross_attn")
        if text is not None:
            overrides["text_dim"] = int(text.shape[1])
    model = build_model(model_config(config.model, **overrides))
    if text is not None:
        model.set_text(torch.from_numpy(text))
    return model, text_source


def _train(config: TrainConfig, ctx: DistContext) -> TrainResult:
    check_train_options(config)
    tune: FineTune | None = None  # a fine-tune: the checkpoint's model, new tiles mixed with replay tiles
    if config.init_from is not None:
        config, tune = start_finetune(config, ctx.world_size)
        _seed_everything(config.seed)
    device = ctx.device
    precision = resolve_precision(config.precision, device)
    save_dir = config.save_dir
    if ctx.is_main:
        save_dir.mkdir(parents=True, exist_ok=True)

    catalog: Catalog = load_catalog(config.catalog) if tune is None else None
    names, colors = (catalog.names, catalog.colors) if tune is None else (tune.names, tune.colors)
    num_classes, in_channels = len(names), config.in_channels
    train_set, val_set = (build_datasets(config, num_classes, in_channels) if tune is None
                          else (tune.train_set, tune.val_set))
    train_tile = int(train_set[0][0].shape[-1])  # recorded in the checkpoint: map's default window
    if config.check_data:
        for ds in (train_set, val_set):
            ds.check_all(progress=config.progress and ctx.is_main)

    model, text_source = _new_model(config, catalog) if tune is None else (tune.model, tune.text_source)
    model.to(device, memory_format=torch.channels_last)  # NHWC convs: ~1.5x faster bf16 training on CPU

    loss_weight = class_loss_weights(train_set.class_counts(), config.class_weights)
    loss_weight = None if loss_weight is None else loss_weight.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]  # none: a fine-tune that refits trust only
    optimizer = torch.optim.AdamW([{"params": trainable}], lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda e: poly_factor(e, config.epochs, config.poly_power))
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and precision != "fp32"
                                  and not torch.cuda.is_bf16_supported())
    ema = weight_average(model, config.ema_decay)
    kept = model if ema is None else ema.module  # what is validated and written as best_model.pth
    start_epoch, best_miou, best_epoch, history = 0, -1.0, -1, []
    if config.overwrite and not config.resume and ctx.is_main:
        for name in RUN_FILES:  # the earlier run's files go first, so the folder never mixes two runs
            (save_dir / name).unlink(missing_ok=True)
    if config.resume:
        start_epoch, best_miou, best_epoch, history = _restore(save_dir / LAST, model, optimizer, scheduler, config, ema)
    board = None
    if ctx.is_main:
        config.write_yaml(save_dir / CONFIG_NAME)
        board = _tensorboard(save_dir, config)

    net: torch.nn.Module = model
    if ctx.distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    # Unpadded shards (not DistributedSampler, which repeats samples): each val pixel is counted once.
    val_shard = Subset(val_set, shard_indices(len(val_set), ctx.rank, ctx.world_size)) if ctx.distributed else val_set
    val_loader = DataLoader(val_shard, batch_size=config.batch_size, num_workers=config.num_workers)
    validator = Predictor.wrap(kept, device, precision, names, colors)  # runs the kept weights as they are

    end_epoch = config.epochs if config.stop_after_epochs is None else min(config.epochs, start_epoch + config.stop_after_epochs)
    for epoch in range(start_epoch, end_epoch):
        # Per-rank stream (unchanged in one process) so ranks draw different augmentations and drop masks.
        torch.manual_seed(_epoch_seed(config.seed, epoch) * ctx.world_size + ctx.rank)
        gen = torch.Generator().manual_seed(_epoch_seed(config.seed, epoch))
        if tune is not None:  # batches of new and replay tiles in a fixed proportion
            loader = DataLoader(train_set, batch_sampler=tune.batches(config.batch_size, gen),
                                num_workers=config.num_workers)
        else:
            if ctx.distributed:
                sampler = DistributedSampler(train_set, ctx.world_size, ctx.rank, shuffle=True, seed=config.seed)
                sampler.set_epoch(epoch)
            else:
                sampler = RandomSampler(train_set, generator=gen)
            loader = DataLoader(train_set, batch_size=config.batch_size, sampler=sampler,
                                num_workers=config.num_workers, drop_last=False)
        net.train()
        if tune is not None:
            tune.hold()  # frozen layers (and with --freeze-bn BatchNorm statistics) as in evaluation
        train_cm = ConfusionMatrix(num_classes, IGNORE_INDEX)
        loss_sum, n_batches, nonfinite = 0.0, 0, 0
        steps_per_epoch = min(len(loader), config.max_steps_per_epoch or len(loader))
        bar = progress_bar(loader, enabled=config.progress and ctx.is_main, total=steps_per_epoch,
                           desc=f"epoch {epoch + 1}/{config.epochs}", unit="step", leave=False)
        epoch_lrs = [group["lr"] for group in optimizer.param_groups]
        for step, (x, y) in enumerate(bar):
            if not trainable or (config.max_steps_per_epoch is not None and step >= config.max_steps_per_epoch):
                break
            ramp = warmup_factor(epoch * steps_per_epoch + step, config.warmup_steps)
            for group, lr in zip(optimizer.param_groups, epoch_lrs):
                group["lr"] = lr * ramp
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            y = ignore_margin(y.to(device), config.loss_margin)
            with autocast(device, precision):
                logits = net(x)  # (B, K, H, W)
                loss = F.cross_entropy(logits.float(), y, weight=loss_weight, ignore_index=IGNORE_INDEX)
            nonfinite = _guard_loss(loss, nonfinite, epoch, step, 1 if ctx.distributed else MAX_NONFINITE_STEPS)
            if nonfinite:
                continue
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.update_parameters(model)
            train_cm.update(logits.detach().argmax(1).cpu(), y.cpu())
            loss_sum += float(loss.detach())
            n_batches += 1
            bar.set_postfix(loss=f"{loss_sum / n_batches:.4f}")
        lr_used = optimizer.param_groups[0]["lr"]
        if trainable:  # (a fine-tune that trains nothing has no step to schedule)
            scheduler.step()  # sets the next epoch's rate from the base rate, whatever the warm-up left

        loss_tot = all_reduce_sum(np.array([loss_sum, n_batches], dtype=np.float64), ctx)
        train_matrix = all_reduce_sum(train_cm.matrix, ctx)
        train_metrics = metrics_from_matrix(train_matrix)
        broadcast_buffers(kept, ctx)  # every rank evaluates (and rank 0 saves) the same BatchNorm statistics
        val_metrics = metrics_from_matrix(all_reduce_sum(confusion_over(validator, val_loader, num_classes), ctx))
        row = {
            "epoch": epoch + 1, "lr": float(lr_used), "train_loss": float(loss_tot[0] / max(loss_tot[1], 1)),
            "train_oa": float(train_metrics.oa), "train_miou": float(train_metrics.miou),
            "val_oa": float(val_metrics.oa), "val_miou": float(val_metrics.miou),
            "val_kappa": float(val_metrics.kappa), "val_mf1": float(val_metrics.mf1),
            **(tune.sampler.drawn(steps_per_epoch) if tune is not None else {}),
        }
        history.append(row)
        improved = val_metrics.miou > best_miou
        if improved:
            best_miou, best_epoch = float(val_metrics.miou), epoch + 1
        if ctx.is_main:
            summary = {"epoch": epoch + 1, "val": val_metrics.to_dict(names), "train_config": config.to_dict(),
                       "tile": train_tile}
            if improved:
                save_checkpoint(save_dir / BEST, kept, names, colors, text_source, metrics=summary)
            state = {
                "epoch": epoch + 1, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "best_miou": best_miou, "best_epoch": best_epoch, "history": history,
                "config": config.to_dict(),
            }
            if ema is not None:  # last.pth holds the trained weights; the average travels in its state
                state["ema"] = ema.state_dict()
            save_checkpoint(save_dir / LAST, model, names, colors, text_source, train_state=state, metrics=summary)
            _write_history(save_dir, history)
            if board is not None:
                for key, value in row.items():
                    if key != "epoch":
                        board.add_scalar(key.replace("_", "/", 1), value, epoch + 1)
                board.flush()
            log.info("epoch %d/%d loss %.4f train mIoU %.4f val mIoU %.4f%s", epoch + 1, config.epochs,
                     row["train_loss"], row["train_miou"], row["val_miou"], " (best)" if improved else "")
        barrier(ctx)
    if board is not None:
        board.close()
    if ctx.is_main and config.calibrate and end_epoch == config.epochs and (save_dir / BEST).exists():
        _calibrate_best(save_dir / BEST, config, device)
    barrier(ctx)
    return TrainResult(save_dir / BEST, save_dir / LAST, best_miou, best_epoch, history)


def _tensorboard(save_dir: Path, config: TrainConfig):
    """A TensorBoard writer under ``save_dir/tensorboard`` when asked for, else None."""
    if not config.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("--tensorboard needs the tensorboard package: pip install 'dunemap[tensorboard]'") from None
    return SummaryWriter(log_dir=str(save_dir / TENSORBOARD_DIR))


def _calibrate_best(path: Path, config: TrainConfig, device: torch.device) -> None:
    """Store the temperature (val) and the area of applicability (train) in the finished run's best checkpoint;
    a fine-tune's come from the replay dataset, its area of applicability from the new tiles too, and its class
    shares of the new ground from the new tiles' source rasters (``scene_prior``, see dunemap.trust.prior)."""
    root, more = (config.data_root, []) if config.init_from is None else (config.replay, [config.data_root])
    prior = more if config.scene_prior else []
    fit = calibrate_checkpoint(ModelSpec(path, device=str(device), precision="fp32"), root, path, seed=config.seed,
                               regions=config.regions, exclude_regions=config.holdout_regions, applicability_roots=more,
                               prior_roots=prior)
    log.info("calibrated %s: %s", path, fit.summary())


def _flag(name: str) -> str:
    return {"in_channels": "--bands", "holdout_regions": "--holdout-region"}.get(name, "--" + name.replace("_", "-"))


def _calibration_pending(save_dir: Path, config: TrainConfig) -> bool:
    """Whether the run's best checkpoint still lacks the end-of-run calibration (a run killed while calibrating):
    ``--resume`` with the run's own epochs then finishes it."""
    best = save_dir / BEST
    return config.calibrate and best.exists() and not load_checkpoint(best).calibration


def _check_resume_options(path: Path, saved: dict, config: TrainConfig, done: int) -> None:
    """Refuse a --resume whose options would change the saved run (naming each); more epochs are allowed, and
    the saved number when only the end-of-run calibration is left to do."""
    now = config.to_dict()
    differ = [f"{_flag(k)} {now[k]} (saved run: {saved[k]})" for k in now
              if k in saved and k not in RESUME_FREE and now[k] != saved[k]]
    if differ:
        raise ConfigError(f"{path}: --resume with options that differ from the saved run: {', '.join(differ)}; "
                          "resume with the saved options or start a new run in another --save-dir")
    if config.epochs == done and _calibration_pending(path.parent, config):
        log.info("%s: all %d epochs are trained; finishing the end-of-run calibration", path.parent, done)
        return
    if config.epochs <= done:
        raise ConfigError(f"{path}: --epochs {config.epochs} but the saved run has already trained {done} epoch(s); "
                          "give more epochs to continue it")


def _restore(path: Path, model, optimizer, scheduler, config: TrainConfig,
             ema: AveragedModel | None = None) -> tuple[int, float, int, list[dict]]:
    if not path.exists():
        raise CheckpointError(f"{path}: --resume given but there is no last checkpoint to resume from")
    loaded = load_checkpoint(path)
    state = loaded.train_state
    if not state:
        raise CheckpointError(f"{path}: checkpoint has no training state to resume from")
    _check_resume_options(path, state.get("config") or {}, config, int(state["epoch"]))
    if loaded.config != model.config:
        raise CheckpointError(f"{path}: saved model config differs from this run's ({loaded.config.name} vs {model.config.name})")
    model.load_state_dict(loaded.model.state_dict())
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if ema is not None:
        if "ema" not in state:
            raise CheckpointError(f"{path}: --ema-decay {config.ema_decay} but the saved run kept no weight average; "
                                  "resume without --ema-decay or start a new run")
        ema.load_state_dict(state["ema"])
    saved_epochs = (state.get("config") or {}).get("epochs", config.epochs)
    if saved_epochs != config.epochs:  # the poly schedule is recomputed over the new number of epochs
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * poly_factor(int(state["epoch"]), config.epochs, config.poly_power)
        log.info("--epochs %d (the saved run planned %d): learning-rate schedule recomputed over %d epochs, "
                 "lr %.3g for epoch %d", config.epochs, saved_epochs, config.epochs,
                 optimizer.param_groups[0]["lr"], int(state["epoch"]) + 1)
    log.info("resuming from %s after epoch %d", path, state["epoch"])
    return int(state["epoch"]), float(state["best_miou"]), int(state["best_epoch"]), list(state["history"])
