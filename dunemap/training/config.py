"""Training configuration: the seed's recipe as defaults, one typed dataclass saved in every checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from dunemap.errors import ConfigError
from dunemap.io.atomic import atomic_path

CONFIG_NAME = "config.yaml"  # the resolved options of a run, written beside its checkpoints

CLASS_WEIGHTS = ("none", "balanced")  # loss weighting of classes (dunemap.training.loop.class_loss_weights)
# a fine-tune's defaults (dunemap train --init-from; dunemap.training.finetune): 200 steps at a constant lr of
# 3e-4, the decoder only, BatchNorm statistics kept; the evidence is in that module's docstring
FINETUNE_RECIPE = {"epochs": 1, "max_steps_per_epoch": 200, "lr": 3e-4, "train_layers": "none", "freeze_bn": True}
TRAIN_LAYERS = {  # --train-layers: which parameters a fine-tune updates (the others keep the checkpoint's values)
    "all": "every layer",
    "decoder": "the decoder and classifier; the backbone (and its text fusion) frozen",
    "classifier": "the last classifier layer only (the text head of an open-vocabulary model)",
    "none": "no weights: the network is the checkpoint's; only its trust record is refitted (temperature, area of "
            "applicability with the new tiles, class shares of the new ground)",
}


@dataclass
class TrainConfig:
    """Options of ``dunemap train``; defaults reproduce the published recipe (AdamW, poly-1 decay, 50 epochs)."""

    data_root: Path  # seed layout: img_dir/{train,val}/*.npy, ann_dir/{train,val}/*.png
    save_dir: Path  # best_model.pth, last.pth, metrics.csv, metrics.json, config.json
    model: str = "mit_b2"  # registered variant (dunemap.models.MODEL_VARIANTS)
    in_channels: int = 64  # bands every image must have (AEF: 64)
    epochs: int = 50
    batch_size: int = 4
    lr: float = 6e-5  # AdamW learning rate at epoch 0
    weight_decay: float = 0.01
    warmup_steps: int = 0  # the lr rises linearly over the first N optimiser steps (0 = none, the published recipe)
    poly_power: float = 1.0  # lr_e = lr * (1 - e / epochs) ** poly_power, stepped once per epoch
    seed: int = 0  # seeds weights, shuffling, augmentation and dropout; same seed => same weights on CPU
    text: str = "catalog"  # catalog | random | shuffled | none (none = plain SegFormer)
    text_embeddings: Path | None = None  # a (K, D) .npy used instead of encoding the catalog
    catalog: Path | None = None  # class catalog (YAML/TOML); None = the packaged 10 dune classes
    encoder: str = "minilm"  # text encoder for the catalog descriptions
    fusion_stage: int = 3  # stage whose tokens cross-attend to the texts
    head: str = "linear"  # linear (1x1 conv classifier) | text (open-vocabulary cosine head)
    class_weights: str = "none"  # none | balanced: CE weights (share of the class's training pixels) ** -0.5
    loss_margin: int = 0  # pixels along each tile edge left out of the loss (labels there lack context); 0 = none
    ema_decay: float = 0.0  # 0 = off; else validate and keep an exponential moving average of the weights, per step
    # none | flip_rot90 (published) | flip_rot90_spectral (domain-robust) | spectral (no flips)
    # | flip_rot90_spectral_rescale (plus a random zoom 0.75-1.33; measured worse on new scenes, docs/quality.md)
    augment: str = "flip_rot90"
    precision: str = "auto"  # auto | fp32 | bf16 (CPU autocast; AMP on CUDA)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_workers: int = 0  # DataLoader worker processes
    regions: list[str] | None = None  # keep only tiles of these regions (manifest.csv)
    holdout_regions: list[str] | None = None  # drop these regions from train and val (leave-one-region-out)
    max_steps_per_epoch: int | None = None  # cap for quick runs and benchmarks
    resume: bool = False  # continue from save_dir/last.pth
    overwrite: bool = False  # replace the run already in save_dir (its checkpoints and metrics are removed first)
    stop_after_epochs: int | None = None  # end this invocation after N epochs (e.g. a batch job's time slice); --resume continues
    check_data: bool = True  # read every sample once before training and fail on the first bad file
    calibrate: bool = True  # at the end: fit the temperature on val and the area of applicability on train
    progress: bool = True
    tensorboard: bool = False  # also write TensorBoard scalars to save_dir/tensorboard (needs tensorboard)
    model_overrides: dict = field(default_factory=dict)  # extra ModelConfig fields (e.g. drop_path)
    # fine-tuning (dunemap.training.finetune; dunemap.training.finetune_config gives its recipe's defaults)
    init_from: Path | None = None  # start from this checkpoint's model, weights, classes and text (never modified)
    init_from_sha256: str | None = None  # the checkpoint's sha256, recorded; when given, the file must still have it
    replay: Path | None = None  # with init_from: dataset whose train tiles join every batch; its val validates
    replay_share: float = 0.5  # share of each fine-tuning batch drawn from the replay tiles
    train_layers: str = "all"  # all | decoder | classifier: the parameters a fine-tune updates (TRAIN_LAYERS)
    freeze_bn: bool = False  # keep the BatchNorm running statistics (a fine-tune's small batches would shift them)
    scene_prior: bool = True  # with init_from: fit the new ground's class shares at the end (dunemap.trust.prior)

    def __post_init__(self) -> None:
        self.data_root = Path(self.data_root)
        self.save_dir = Path(self.save_dir)
        if self.text_embeddings is not None:
            self.text_embeddings = Path(self.text_embeddings)
        for name in ("catalog", "init_from", "replay"):
            if getattr(self, name) is not None:
                setattr(self, name, Path(getattr(self, name)))

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}

    def write_yaml(self, path: str | Path) -> Path:
        """Write the resolved options as YAML (readable again by ``dunemap train --config``), atomically."""
        import yaml

        d = self.to_dict()
        d.pop("resume", None), d.pop("overwrite", None)  # how this invocation treated the folder, not the run
        text = "# dunemap train: resolved options of this run (dunemap train --config FILE reads it)\n"
        text += yaml.safe_dump(d, sort_keys=False)
        with atomic_path(Path(path)) as tmp:
            Path(tmp).write_text(text)
        return Path(path)


def read_config_file(path: str | Path) -> dict:
    """The options mapping of a YAML config file; one line naming the file on any problem."""
    import yaml

    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read as YAML ({' '.join(str(exc).split())})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of option: value, got {type(values).__name__}")
    return values
