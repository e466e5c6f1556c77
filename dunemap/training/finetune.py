"""Fine-tuning on new ground: a trained model, a few labelled patches, and replay of its own training tiles.

``dunemap train --init-from RUN/best_model.pth --data-root NEW --replay DATA --save-dir RUN2`` (issue 26):

- **The model is the checkpoint's.** Its architecture, input bands, class names and colours and its class
  text (the rows it was trained with, bit for bit) are kept; :func:`finetune_config` refuses a
  different ``--model``, ``--bands``, ``--text``, ``--head``, ``--fusion-stage`` or ``--encoder``. The
  fine-tune's own options (epochs, lr, batch size, steps, seed ...) apply; the base run's data options
  (augmentation, class weights, loss margin, region filters) are kept unless given.
- **Batches mix new and old ground.** Every batch holds ``replay_share`` (default half) tiles from the
  train split of ``--replay`` (the base model's training data, filtered by the base run's regions) and
  the rest from the patch tiles of ``--data-root`` (``dunemap prepare --patches``), spread evenly and
  drawn in a seeded order (:class:`MixedBatches`), so the model learns the new ground without
  forgetting the old. Larger tiles are cut at random to the patch tiles' size. Validation, the
  best-epoch choice and the temperature use ``--replay``'s val split (the patches are all training
  data); the area of applicability is fitted on the replay tiles and the patch tiles together.
- **The recipe** (:data:`FINETUNE_RECIPE`, the defaults of options not given) keeps the network
  (``--train-layers none``) and refits its trust record: the temperature, the area of applicability (the
  patch tiles join the training data) and the **class shares of the new ground** (:mod:`dunemap.trust.prior`:
  EM over the calibrated probabilities of the patches' source rasters, the patches' labels included), which
  maps of rasters on that ground use. ``benchmarks/bench_adapt.py`` measured why (docs/adapt.md): with 10
  suggested 64 px patches the class shares raise the four held-out scenes from 0.459 to 0.709 mIoU per
  scene (two seeds, unlabelled pixels) and forget nothing elsewhere, while training the decoder too
  (``--train-layers decoder``: 200 steps at a constant lr of 3e-4, BatchNorm statistics frozen) lowers
  other regions' held-out scenes by up to 0.16.
- **New classes.** A label of a class the checkpoint does not have is refused, naming the file and the
  id, with one exception: an open-vocabulary model (``--head text``) scores pixels against class texts,
  so it learns a new class when ``--catalog`` describes it. That catalog must keep the model's classes
  at their ids (the replay labels use them) and add the new ones after them; they are encoded by the
  model's own encoder (a model trained on random text cannot encode them and is refused).
- **The base run is never modified**: a save dir at or inside its folder is refused, and the
  checkpoint's sha256 is recorded (``init_from_sha256``); a recorded hash the file no longer has is refused.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Sampler

from dunemap.data.dataset import SeedLayoutDataset, read_label
from dunemap.data.seed_layout import IGNORE_INDEX, list_samples
from dunemap.data.transforms import build_augmentation
from dunemap.errors import CheckpointError, ConfigError, InputError
from dunemap.io.checksum import file_sha256
from dunemap.knowledge.catalog import load_catalog
from dunemap.models.checkpoint import LoadedCheckpoint, load_checkpoint
from dunemap.registry import choose
from dunemap.training.config import CONFIG_NAME, FINETUNE_RECIPE, TRAIN_LAYERS, TrainConfig

log = logging.getLogger(__name__)

KEPT = ("model", "in_channels", "text", "fusion_stage", "head", "encoder", "model_overrides")  # the checkpoint's
INHERITED = ("augment", "class_weights", "loss_margin", "regions", "holdout_regions")  # the base run's, unless given
DECIDED = (*KEPT, *INHERITED, *FINETUNE_RECIPE)  # options a fine-tune takes from elsewhere when not given
RUN_MARKS = ("last.pth", "metrics.json", CONFIG_NAME)  # files that make a checkpoint's folder a training run
# parameters each --train-layers value updates, by name prefix (SegFormer and U-Net)
_TRAINED = {"decoder": ("decode_head.", "text_head.", "up.", "merge.", "classifier."),
            "classifier": ("decode_head.linear_pred.", "text_head.", "classifier."),
            "none": ()}


def _flag(name: str) -> str:
    return {"in_channels": "--bands"}.get(name, "--" + name.replace("_", "-"))


def _default(name: str):
    return TrainConfig.__dataclass_fields__[name].default


def check_finetune_options(config: TrainConfig) -> None:
    """Refuse fine-tuning options without ``--init-from``, a fine-tune without ``--replay``, bad values."""
    choose(TRAIN_LAYERS, config.train_layers, "--train-layers")
    if not (math.isfinite(config.replay_share) and 0 <= config.replay_share < 1):
        raise ConfigError(f"--replay-share {config.replay_share} must be at least 0 and below 1 (the rest of each "
                          "batch are the new tiles)")
    if config.init_from is None:
        given = [f for f, on in (("--replay", config.replay is not None), ("--freeze-bn", config.freeze_bn),
                                 (f"--train-layers {config.train_layers}", config.train_layers != "all")) if on]
        if given:
            raise ConfigError(f"{given[0]} needs --init-from (it fine-tunes a trained model)")
    elif config.replay is None:
        raise ConfigError("--init-from needs --replay DATA: the dataset the model was trained on (its train tiles "
                          "are mixed into every batch, its val split validates)")


def check_save_dir(init_from: Path, save_dir: Path) -> None:
    """Refuse a save dir that is the checkpoint's folder, or inside it when that folder holds a training run
    (a checkpoint beside its run's files): the base run is never modified."""
    base = Path(os.path.realpath(Path(init_from).parent))
    target = Path(os.path.realpath(save_dir))
    if target == base or (base in target.parents and any((base / name).exists() for name in RUN_MARKS)):
        raise ConfigError(f"--save-dir {save_dir} is inside the folder of --init-from {init_from}; a fine-tune "
                          "never writes into the base run: choose a folder outside it")


def base_options(loaded: LoadedCheckpoint) -> dict:
    """The options that define the checkpoint's model (:data:`KEPT`), from its model config and training options."""
    saved, c = dict(loaded.metrics.get("train_config") or {}), loaded.config
    return {"model": c.name, "in_channels": c.in_channels, "head": c.head,
            "fusion_stage": getattr(c, "fusion_stage", saved.get("fusion_stage", _default("fusion_stage"))),
            "text": saved.get("text", "catalog" if loaded.model.uses_text else "none"),
            "encoder": saved.get("encoder", _default("encoder")),
            "model_overrides": dict(saved.get("model_overrides") or {})}


def finetune_config(init_from: str | os.PathLike, data_root: str | os.PathLike, save_dir: str | os.PathLike,
                    replay: str | os.PathLike | None = None, **options) -> TrainConfig:
    """The TrainConfig of a fine-tune: the checkpoint's model options, the base run's data options and
    :data:`FINETUNE_RECIPE` for what ``options`` (TrainConfig fields) do not give.

    Raises ConfigError for an option in ``options`` that would change the checkpoint's model (naming it),
    and for a save dir inside the base run's folder; CheckpointError for an unreadable checkpoint.
    """
    init_from = Path(init_from)
    check_save_dir(init_from, Path(save_dir))
    loaded = load_checkpoint(init_from, text_embeddings=options.get("text_embeddings"))
    kept = base_options(loaded)
    for key, value in kept.items():
        if key in options and options[key] != value:
            raise ConfigError(f"{_flag(key)} {options[key]}: {init_from} is a model of {_flag(key)} {value}; a "
                              f"fine-tune keeps the checkpoint's model (leave {_flag(key)} out)")
    saved = loaded.metrics.get("train_config") or {}
    inherited = {k: saved[k] for k in INHERITED if k in saved}
    return TrainConfig(data_root=Path(data_root), save_dir=Path(save_dir), init_from=init_from,
                       replay=None if replay is None else Path(replay),
                       **{**FINETUNE_RECIPE, **inherited, **options, **kept})


class MixedBatches(Sampler):
    """Index batches over a :class:`MixedTiles`: ``share`` of the slots hold replay tiles, the others new tiles.

    Slot ``j`` (counted over the epoch) is a replay slot when ``floor((j + 1) * share) > floor(j * share)``,
    so the replay tiles are spread evenly (half: every other slot; each batch of 4 holds 2 and 2). Each source
    is drawn in a random order from ``generator``, reshuffled whenever it is used up. An epoch is one pass
    over the source that needs the most slots at its share.
    """

    def __init__(self, n_new: int, n_replay: int, batch_size: int, share: float, generator: torch.Generator):
        self.n_new, self.n_replay, self.batch_size = n_new, n_replay, batch_size
        self.share, self.generator = share, generator
        slots = n_new if share == 0 else max(n_new, n_replay)  # then the fewest slots that hold both sources
        while (share > 0 and self.replay_slots(slots) < n_replay) or slots - self.replay_slots(slots) < n_new:
            slots += 1
        self.slots = slots

    def replay_slots(self, end: int) -> int:
        """How many of the slots ``0 .. end - 1`` hold replay tiles."""
        return math.floor(end * self.share)

    def __len__(self) -> int:
        return math.ceil(self.slots / self.batch_size)

    def _order(self, n: int, offset: int):
        while True:
            for i in torch.randperm(n, generator=self.generator).tolist():
                yield offset + i

    def __iter__(self):
        new, replay = self._order(self.n_new, 0), self._order(self.n_replay, self.n_new)
        batch = []
        for j in range(self.slots):
            batch.append(next(replay if self.replay_slots(j + 1) > self.replay_slots(j) else new))
            if len(batch) == self.batch_size or j == self.slots - 1:
                yield batch
                batch = []

    def drawn(self, steps: int) -> dict[str, int]:
        """The new and replay samples the first ``steps`` batches hold."""
        used = min(steps * self.batch_size, self.slots)
        return {"new_samples": used - self.replay_slots(used), "replay_samples": self.replay_slots(used)}


class MixedTiles(Dataset):
    """The new tiles (indices ``0 .. n_new - 1``) then the replay tiles, each cut at random to ``size`` (h, w)."""

    def __init__(self, new: SeedLayoutDataset, replay: SeedLayoutDataset, size: tuple[int, int]):
        self.new, self.replay, self.size = new, replay, size

    def __len__(self) -> int:
        return len(self.new) + len(self.replay)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self.new)
        x, y = self.new[index] if index < n else self.replay[index - n]
        h, w = self.size
        if tuple(y.shape) == (h, w):
            return x, y
        r = int(torch.randint(0, y.shape[0] - h + 1, ()))
        c = int(torch.randint(0, y.shape[1] - w + 1, ()))
        return x[:, r:r + h, c:c + w], y[r:r + h, c:c + w]

    def class_counts(self) -> np.ndarray:
        return self.new.class_counts() + self.replay.class_counts()

    def check_all(self, progress: bool = False) -> int:
        return self.new.check_all(progress) + self.replay.check_all(progress)


def _check_bands(root: Path, split: str, bands: int, flag: str, base: Path) -> None:
    """Refuse a dataset whose first tile of ``split`` has another band count than the model takes."""
    image = list_samples(root, split)[0][0]
    try:
        shape = np.load(image, mmap_mode="r", allow_pickle=False).shape
    except (OSError, ValueError):
        return  # the dataset's own checks name what is wrong with the file
    if len(shape) == 3 and shape[0] != bands:
        raise InputError(f"{flag} {root}: its tiles have {shape[0]} bands ({image}) but {base} takes {bands}")


def _check_classes(root: Path, names: list[str], base: Path, open_vocabulary: bool) -> None:
    """Refuse a label of the new tiles whose class id the model does not have, naming the file and the id."""
    for _, ann in list_samples(root, "train"):
        ids = np.unique(read_label(ann))
        bad = ids[(ids >= len(names)) & (ids != IGNORE_INDEX)]
        if bad.size:
            hint = ("describe it in a --catalog that keeps the model's classes at their ids and adds it after them"
                    if open_vocabulary else "a model with a linear head cannot learn a new class (train one with "
                    "--head text, or from scratch with a catalog that has it)")
            raise InputError(f"{ann}: class id {int(bad[0])}, which {base} does not have ({len(names)} classes: "
                             f"{', '.join(names)}); {hint}")


def _open_vocabulary(path: Path, config: TrainConfig, loaded: LoadedCheckpoint) -> LoadedCheckpoint:
    """The checkpoint with the classes of ``config.catalog``: checked against its own (a linear head), or
    extended by new classes after its own (an open-vocabulary model)."""
    catalog = load_catalog(config.catalog)
    old = loaded.class_names
    if loaded.model.open_vocabulary and catalog.names[:len(old)] != old:
        i = next(i for i, name in enumerate(old) if i >= catalog.num_classes or catalog.names[i] != name)
        has = f"class {i} is {catalog.names[i]!r}" if i < catalog.num_classes else f"has no class {i}"
        raise ConfigError(f"--catalog {config.catalog}: {has} but {path}'s class {i} is {old[i]!r}; keep the "
                          "model's classes at their ids and add new ones after them")
    try:
        loaded = load_checkpoint(path, text_embeddings=config.text_embeddings, catalog=catalog)
    except CheckpointError as exc:
        raise CheckpointError(f"--catalog {config.catalog}: {exc}") from None
    if loaded.model.open_vocabulary:  # the text head has no per-class weights: the class count is the text's
        loaded.model.config = dataclasses.replace(loaded.config, num_classes=len(loaded.class_names))
    return loaded


def _datasets(config: TrainConfig, names: list[str], base: Path, open_vocabulary: bool
              ) -> tuple[MixedTiles, SeedLayoutDataset]:
    """The new tiles mixed with the replay train tiles, and the replay val tiles; every input checked first."""
    bands, k = config.in_channels, len(names)
    _check_bands(config.data_root, "train", bands, "--data-root", base)
    for split in ("train", "val"):
        _check_bands(config.replay, split, bands, "--replay", base)
    _check_classes(config.data_root, names, base, open_vocabulary)
    augment = build_augmentation(config.augment)
    new = SeedLayoutDataset(config.data_root, "train", k, bands, transform=augment)
    kw = dict(num_classes=k, in_channels=bands, regions=config.regions, exclude_regions=config.holdout_regions)
    replay = SeedLayoutDataset(config.replay, "train", transform=augment, **kw)
    size = (min(h for h, _ in new.sizes), min(w for _, w in new.sizes))
    small = [(h, w) for h, w in replay.sizes if h < size[0] or w < size[1]]
    if small:
        raise InputError(f"--replay {config.replay}: tiles of {small[0][0]}x{small[0][1]} px, smaller than the "
                         f"{size[0]}x{size[1]}-px tiles of {config.data_root}; prepare the patches with a "
                         "--tile no larger than the replay tiles")
    log.info("fine-tuning %s: %d new tiles of %s and %d replay tiles of %s, %.0f%% of each batch replayed",
             base, len(new), config.data_root, len(replay), config.replay, 100 * config.replay_share)
    return MixedTiles(new, replay, size), SeedLayoutDataset(config.replay, "val", **kw)


@dataclass
class FineTune:
    """A fine-tune under way: the base checkpoint's model (parameters frozen per ``train_layers``) and its data."""

    model: nn.Module
    names: list[str]
    colors: list[tuple[int, int, int]]
    text_source: dict
    train_set: MixedTiles
    val_set: SeedLayoutDataset
    freeze_bn: bool
    share: float
    sampler: MixedBatches | None = None

    def batches(self, batch_size: int, generator: torch.Generator) -> MixedBatches:
        """This epoch's batches (a new seeded draw for each generator)."""
        self.sampler = MixedBatches(len(self.train_set.new), len(self.train_set.replay), batch_size, self.share,
                                    generator)
        return self.sampler

    def hold(self) -> None:
        """After ``model.train()``: wholly frozen modules run as in evaluation (no dropout, no drop path), and
        with ``freeze_bn`` every BatchNorm keeps its running statistics."""
        for module in self.model.modules():
            params = list(module.parameters())
            if (params and not any(p.requires_grad for p in params)) or \
                    (self.freeze_bn and isinstance(module, nn.modules.batchnorm._BatchNorm)):
                module.eval()


def start_finetune(config: TrainConfig, world_size: int = 1) -> tuple[TrainConfig, FineTune]:
    """Load ``config.init_from`` for fine-tuning: the config with the checkpoint's model options and sha256,
    and the :class:`FineTune` holding its model (the parameters outside ``config.train_layers`` frozen) and its
    datasets. Every input is checked here, before the run writes anything."""
    path = config.init_from
    if world_size > 1:
        raise ConfigError("--init-from: a fine-tune runs in one process; start it without torchrun")
    check_save_dir(path, config.save_dir)
    loaded = load_checkpoint(path, text_embeddings=config.text_embeddings)
    sha256 = file_sha256(path)
    if config.init_from_sha256 and config.init_from_sha256 != sha256:
        raise ConfigError(f"--init-from {path}: its sha256 is {sha256[:12]} but the run's options record "
                          f"{config.init_from_sha256[:12]}; the checkpoint changed since")
    if config.catalog is not None:
        loaded = _open_vocabulary(path, config, loaded)
    config = dataclasses.replace(config, init_from_sha256=sha256, **base_options(loaded))
    model = loaded.model
    if config.train_layers != "all":
        prefixes = _TRAINED[config.train_layers]
        for name, param in model.named_parameters():
            param.requires_grad_(name.startswith(prefixes))
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("fine-tuning %s (sha256 %s): %s, %d of %d parameters trained%s", path, sha256[:12],
             TRAIN_LAYERS[config.train_layers], trained, sum(p.numel() for p in model.parameters()),
             ", BatchNorm statistics frozen" if config.freeze_bn else "")
    train_set, val_set = _datasets(config, loaded.class_names, path, model.open_vocabulary)
    return config, FineTune(model, loaded.class_names, loaded.colors, loaded.text_source, train_set, val_set,
                            config.freeze_bn, config.replay_share)


__all__ = ["FINETUNE_RECIPE", "FineTune", "MixedBatches", "MixedTiles", "finetune_config", "start_finetune"]
