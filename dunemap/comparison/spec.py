"""The quality benchmark's run specification: presets, methods, protocols, the grid of runs and its settings.

Pure descriptions: nothing here trains, reads data or renders a report, so :mod:`dunemap.comparison.quality`
(the runner), :mod:`dunemap.comparison.stats` and :mod:`dunemap.comparison.report` all import from it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import dunemap.synth
from dunemap.errors import ConfigError
from dunemap.registry import choose

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SynthSpec:
    """The synthetic five-region dataset a preset trains and tests on (``dunemap.synth.write_dataset``)."""

    regions: tuple[str, ...]
    scenes_per_region: int
    scene_size: int  # pixels per side of each scene
    tile: int  # pixels per side of each training tile
    block_tiles: int = 2  # side of the square blocks of tiles dealt whole to train/val/test
    seed: int = 0  # the data stays fixed across training seeds
    region_px: float = 320.0  # typical width of one landform region (dunemap.synth.SceneConfig.region_px), pixels
    split_by: str = "scene"  # scene: whole scenes held out for val/test (dunemap.data.splits.SPLIT_MODES)


@dataclass(frozen=True)
class QualityPreset:
    """One budget, the same for every method: data, network size and schedule, pixel-baseline sample."""

    name: str
    description: str
    data: SynthSpec
    model: str  # SegFormer variant of segformer / fusion / fusion_random
    epochs: int
    batch_size: int
    lr: float
    max_steps_per_epoch: int | None
    holdout_regions: tuple[str, ...]  # the leave-one-region-out folds that are run
    unet_overrides: dict = field(default_factory=dict)  # U-Net size (UNetConfig fields)
    ema_decay: float = 0.0  # weight average of every network (TrainConfig.ema_decay; 0 = off)
    augment: str = "flip_rot90"  # training augmentation of every network (dunemap.data.transforms.AUGMENTATIONS)
    precision: str = "auto"
    pixels_per_class: int = 500
    rf_trees: int = 100
    knn_neighbors: int = 5


ALL_REGIONS = ("namib", "atacama", "mojave", "qaidam", "yilgarn")

PRESETS: dict[str, QualityPreset] = {
    "micro": QualityPreset(
        name="micro", description="seconds; only for the tests",
        data=SynthSpec(regions=("namib", "atacama", "mojave"), scenes_per_region=2, scene_size=96, tile=32,
                       block_tiles=1),
        model="mit_tiny", epochs=1, batch_size=4, lr=1e-3, max_steps_per_epoch=2, holdout_regions=("atacama",),
        unet_overrides={"base_width": 8, "depth": 2}, augment="flip_rot90_spectral", precision="fp32",
        pixels_per_class=40, rf_trees=10, knn_neighbors=3,
    ),
    # 200 steps of batch 8: with 100 the networks were still improving in their last epoch. A seed-0 probe
    # at this budget with the spectral shift (flip_rot90_spectral) scored lower than flips alone (SegFormer
    # with / without text: leave-one-region-out -1.6 / -0.8 mIoU points, in-region -1.8 / -3.7), so the
    # networks keep the published augmentation. The class-balanced loss of the demo recipe, probed at this
    # budget over seeds 0-2 (idle machine, 2 threads), lowered the new-scene margin over the random forest from
    # +9.7 to +8.3 mIoU points (best network 25.9 against 27.4), so the networks keep the plain cross-entropy.
    # Twice the steps (20 per epoch) did not help either: SegFormer without text 26.7 on new scenes (seeds 0-2).
    # A weight average (ema_decay 0.99), probed on the data after the label-rule fix (seeds 0-2): best new-scene
    # margin over the random forest +13.5 +- 2.6 points against +12.5 +- 6.0 without, within the spread, and the
    # catalog-text model 40.9 against 45.7 in-scene, so the networks keep the plain weights.
    # Four scenes of 256 px per region rather than two of 384 (about the same pixels): whole scenes are held
    # out for val and test, and more scenes give the new-scene protocol three test scenes instead of two.
    "small": QualityPreset(
        name="small", description="<= 20 minutes on a shared 2-core CPU with --threads 1",
        data=SynthSpec(regions=ALL_REGIONS, scenes_per_region=4, scene_size=256, tile=64, block_tiles=2),
        model="mit_tiny", epochs=20, batch_size=8, lr=2e-3, max_steps_per_epoch=10,
        holdout_regions=("namib", "mojave", "yilgarn"), unet_overrides={"base_width": 16, "depth": 3},
        precision="fp32", pixels_per_class=500, rf_trees=100, knn_neighbors=5,
    ),
    "full": QualityPreset(
        name="full", description="for a GPU: MiT-B2, every region held out once, 50 epochs",
        data=SynthSpec(regions=ALL_REGIONS, scenes_per_region=4, scene_size=1024, tile=256),
        model="mit_b2", epochs=50, batch_size=8, lr=2e-4, max_steps_per_epoch=None, holdout_regions=ALL_REGIONS,
        unet_overrides={"base_width": 32, "depth": 4}, precision="auto", pixels_per_class=1000, rf_trees=100,
        knn_neighbors=5,
    ),
}


@dataclass(frozen=True)
class Method:
    """A competitor: a per-pixel sklearn baseline or a network trained by ``dunemap.training.train``."""

    name: str
    label: str  # for tables and figures
    kind: str  # "pixel" | "network"
    text: str = "none"  # text mode of a network (dunemap.knowledge.text.TEXT_MODES)
    architecture: str | None = None  # None: the preset's SegFormer


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("rf", "Random forest (per pixel)", "pixel"),
        Method("knn", "kNN (per pixel)", "pixel"),
        Method("segformer", "SegFormer, no text", "network", text="none"),
        Method("fusion", "SegFormer + catalog text", "network", text="catalog"),
        Method("fusion_random", "SegFormer + random text", "network", text="random"),
        Method("unet", "U-Net", "network", text="none", architecture="unet"),
    )
}

PROTOCOLS: dict[str, str] = {
    "loro": "leave-one-region-out: train and validate on the other regions, test on every tile of the held-out one",
    "in_region": "in-scene: test tiles from blocks of the scenes the network trained on (all regions)",
    "new_scene": "new-scene: test tiles of whole scenes never seen in training, from the same regions",
}
PROTOCOL_LABELS: dict[str, str] = {"loro": "Leave-one-region-out", "in_region": "In-scene",
                                   "new_scene": "New-scene"}


@dataclass(frozen=True)
class Run:
    """One cell of the benchmark grid."""

    protocol: str  # a key of PROTOCOLS
    holdout: str | None  # the held-out region (loro) or None (in_region)
    method: str  # a key of METHODS
    seed: int

    @property
    def fold(self) -> str:
        return f"loro-{self.holdout}" if self.protocol == "loro" else self.protocol

    @property
    def run_id(self) -> str:
        return f"{self.fold}__{self.method}__seed{self.seed}"

    @property
    def training_id(self) -> str:
        """Runs with the same training id share one trained model: in-scene and new-scene test the same network."""
        fold = self.fold if self.protocol == "loro" else "pooled"
        return f"{fold}__{self.method}__seed{self.seed}"


def plan_runs(protocols: list[str], holdouts: list[str], methods: list[str], seeds: list[int]) -> list[Run]:
    """Every run of the grid, protocols first, then folds, methods and seeds (the order they are executed in)."""
    runs = []
    for protocol in protocols:
        folds = list(holdouts) if protocol == "loro" else [None]
        for holdout in folds:
            for method in methods:
                for seed in seeds:
                    runs.append(Run(protocol, holdout, method, seed))
    return runs


@dataclass
class QualityConfig:
    """Options of ``dunemap benchmark quality``."""

    out: Path  # results: runs/*.json, tables, figures
    preset: str = "small"  # a key of PRESETS
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    protocols: list[str] = field(default_factory=lambda: list(PROTOCOLS))
    holdout_regions: list[str] | None = None  # leave-one-region-out folds; None: the preset's
    work_dir: Path | None = None  # synthetic data and training runs; None: OUT/work
    data_root: Path | None = None  # an existing seed-layout dataset with manifest.csv instead of synthetic data
    catalog: Path | None = None  # class catalog of data_root (None: the packaged 10 dune classes)
    in_channels: int = 64
    benchmarks_md: Path | None = None  # write/replace the quality section of this file
    command: str = ""  # the command line recorded in the report
    device: str = "auto"
    precision: str | None = None  # None: the preset's
    threads: int | None = None  # torch intra-op threads; None: torch's default
    keep_checkpoints: bool = False  # keep every run's .pth files (large for the full preset)
    progress: bool = True

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.work_dir = Path(self.work_dir) if self.work_dir is not None else self.out / "work"
        for name in ("data_root", "catalog", "benchmarks_md"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, Path(value))
        choose(PRESETS, self.preset, "quality preset")
        for m in self.methods:
            choose(METHODS, m, "benchmark method")
        for p in self.protocols:
            choose(PROTOCOLS, p, "benchmark protocol")
        if not self.methods or not self.protocols or not self.seeds:
            raise ConfigError("benchmark needs at least one method, one protocol and one seed")
        for what, values in (("methods", self.methods), ("protocols", self.protocols), ("seeds", self.seeds)):
            if len(set(values)) != len(values):
                raise ConfigError(f"benchmark {what} {values} repeat an entry; give each once")
        if any(s < 0 for s in self.seeds):
            raise ConfigError(f"benchmark seeds {self.seeds} must be non-negative integers")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads={self.threads}; expected a positive integer")
        if self.precision is not None:
            choose(dict.fromkeys(("auto", "fp32", "bf16")), self.precision, "precision")

    @property
    def resolved_preset(self) -> QualityPreset:
        return PRESETS[self.preset]


def digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]


def generator_fingerprint() -> str:
    """A hash of the synthetic generator's source (``dunemap/synth/*.py``): a changed generator is new data.

    Datasets and stored results are keyed by it, so neither is reused across generator versions.
    """
    h = hashlib.sha256()
    for path in sorted(Path(dunemap.synth.__file__).parent.glob("*.py")):
        h.update(path.name.encode("utf-8") + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def run_settings(config: QualityConfig, preset: QualityPreset, data_root: Path) -> dict:
    """Everything besides the run's own key that determines its result; stored rows must match it to be reused."""
    p = asdict(preset)
    p.pop("holdout_regions")
    p.pop("description")
    p.pop("name")
    if config.data_root is not None:
        p.pop("data")
        p["data_root"] = str(Path(config.data_root).resolve())
    else:
        p["generator"] = generator_fingerprint()
    return {"preset": config.preset, "budget": p, "catalog": str(config.catalog) if config.catalog else None,
            "in_channels": config.in_channels, "precision": config.precision or preset.precision}
