"""Fit a checkpoint's trust record from labelled data: the temperature and the area of applicability.

Training calls :func:`fit_trust` on its best model at the end of a run; ``dunemap calibrate`` calls
it on any checkpoint (a published MADS state_dict included) and writes a new, self-describing
checkpoint. The temperature is fitted on a split the model was not trained on (``val``), and on its
tiles of new ground when it has them: a map is applied to scenes no label touched, where a model is
less sure than on new blocks of its training scenes, so that is the confidence to calibrate. The area
of applicability describes the training split in the decoder's features and in the input
embeddings, with the tiles' source scenes as cross-validation folds (tiles when the dataset has no
manifest or only one scene).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from dunemap.data.dataset import SeedLayoutDataset
from dunemap.data.manifest import read_manifest, scene_groups
from dunemap.data.seed_layout import IGNORE_INDEX
from dunemap.errors import ConfigError, InputError
from dunemap.models.checkpoint import save_checkpoint
from dunemap.raster.geometry import Box, window_starts
from dunemap.raster.reader import EmbeddingReader
from dunemap.runtime import ModelSpec, Predictor, load_model, predict_over, resolve_device
from dunemap.trust.applicability import POOL, Applicability, fit_applicability, pool_features, pool_inputs
from dunemap.trust.calibration import ReliabilityAccumulator, at_bound, fit_temperature
from dunemap.trust.prior import ScenePrior, em_shares

log = logging.getLogger(__name__)

MAX_CALIBRATION_PIXELS = 400_000  # labelled pixels kept for the temperature fit (a bounded, random sample)
FEATURES_PER_TILE = 256  # feature vectors kept per training tile for the area of applicability
MAX_PRIOR_PIXELS = 250_000  # unlabelled pixels of new ground sampled for its class shares (a regular grid)
PRIOR_WINDOW = 128  # window side for those probabilities when the checkpoint records no training tile


@dataclass
class TrustFit:
    """What :func:`fit_trust` found: the calibration record and the area of applicability (or None)."""

    calibration: dict
    applicability: Applicability | None
    scene_prior: ScenePrior | None = None  # a fine-tune's class shares of its new ground (also in calibration)

    def summary(self) -> str:
        c = self.calibration
        where = f"{c['split']} ({c['scenes']} scenes)" if c.get("scenes") else c["split"]
        text = (f"temperature {c['temperature']:.3f} on {c['pixels']} {where} pixels: "
                f"ECE {c['ece_before']:.4f} -> {c['ece_after']:.4f}")
        if at_bound(c["temperature"]):
            text += f" (T stopped at its bound {c['temperature']:.3f}: not a real fit, see the warning above)"
        if self.applicability is not None:
            aoa = self.applicability
            text += (f"; area of applicability from {aoa.samples.shape[0]} training cells, "
                     f"DI threshold {aoa.threshold:.3f}")
            if aoa.inputs is not None:
                text += f" (input space {aoa.inputs.threshold:.3f})"
        if self.scene_prior is not None:
            text += f"; {self.scene_prior.describe()}"
        return text


def _new_ground(root: Path, split: str) -> list[str]:
    """Names of ``split``'s tiles from scenes that gave no training tile (none without a manifest)."""
    return scene_groups(read_manifest(root) or [], split)["new_scene"]


def _folds(datasets: list[SeedLayoutDataset]) -> np.ndarray:
    """One fold id per sample of ``datasets`` (in order): its source scene from the manifests when there are
    several, else the tile itself."""
    scenes = []
    for dataset in datasets:
        records = read_manifest(dataset.root) or []
        source = {r.name: r.source for r in records if r.split == dataset.split}
        scenes += [source.get(name, "") for name in dataset.names]
    if len({s for s in scenes if s}) >= 2 and all(scenes):
        _, ids = np.unique(np.asarray(scenes), return_inverse=True)
        return ids
    return np.arange(len(scenes))


def _calibration_sample(predictor: Predictor, dataset: SeedLayoutDataset, seed: int):
    """Logits (N, K) and labels (N,) of a random sample of the labelled pixels of ``dataset``, fp32."""
    total = sum(h * w for h, w in dataset.sizes)
    keep_share = min(1.0, MAX_CALIBRATION_PIXELS / max(total, 1))
    gen = torch.Generator().manual_seed(seed)
    logits_parts, label_parts = [], []
    for logits, y, _ in predict_over(predictor, DataLoader(dataset, batch_size=4, shuffle=False)):
        logits = logits.float().cpu()  # (B, K, H, W)
        keep = (y != IGNORE_INDEX) & (torch.rand(y.shape, generator=gen) < keep_share)
        logits_parts.append(logits.permute(0, 2, 3, 1)[keep])
        label_parts.append(y[keep])
    return torch.cat(logits_parts), torch.cat(label_parts)


def _training_features(predictor: Predictor, datasets: list[SeedLayoutDataset], seed: int):
    """A bounded random sample of labelled cells: decoder features (N, D), the input per cell (N, C), fold ids (N,)."""
    folds = _folds(datasets)
    rng = np.random.default_rng(seed)
    feats, inputs, fold_ids = [], [], []
    samples = [(dataset, i) for dataset in datasets for i in range(len(dataset))]
    for (dataset, i), fold in zip(samples, folds):
        x, y = dataset[i]
        _, features = predictor.forward_with_features(x[None])  # (1, D, h/4, w/4)
        features = pool_features(features.float().cpu(), POOL)[0]  # (D, h/4/POOL, w/4/POOL)
        step = 4 * POOL
        cells = pool_inputs(x[None].float(), step)[0]  # (C, h/step, w/step), the same cells
        centres = y[step // 2 :: step, step // 2 :: step] != IGNORE_INDEX  # the label at each cell's centre
        labelled = torch.zeros(features.shape[1:], dtype=torch.bool)  # a partial edge cell without a centre: skipped
        labelled[: centres.shape[0], : centres.shape[1]] = centres[: features.shape[1], : features.shape[2]]
        vectors = features.permute(1, 2, 0)[labelled].numpy()  # (M, D)
        values = cells.permute(1, 2, 0)[labelled].numpy()  # (M, C)
        if vectors.shape[0] > FEATURES_PER_TILE:
            keep = rng.choice(vectors.shape[0], FEATURES_PER_TILE, replace=False)
            vectors, values = vectors[keep], values[keep]
        feats.append(vectors)
        inputs.append(values)
        fold_ids.append(np.full(vectors.shape[0], fold))
    return np.concatenate(feats), np.concatenate(inputs), np.concatenate(fold_ids)


def _owned(starts: list[int], window: int) -> list[tuple[int, int]]:
    """Each window's own span along an axis: from where the previous window ended (the last, aligned to the
    raster's end, overlaps the one before it) to its end, so every pixel is counted once."""
    return [(s if i == 0 else max(s, starts[i - 1] + window), s + window) for i, s in enumerate(starts)]


def fit_scene_prior(predictor: Predictor, roots, train_counts: np.ndarray,
                    max_pixels: int = MAX_PRIOR_PIXELS) -> ScenePrior:
    """The class shares of the new ground that the patch datasets ``roots`` (``prepare --patches``) were cut
    from: the source rasters their manifests name are predicted in windows of the training tile, side by
    side, and a regular grid of at most ``max_pixels`` valid pixels enters :func:`em_shares` with the
    patches' labelled pixels. ``train_counts`` are the training data's labelled pixels per class."""
    k, bands = predictor.num_classes, predictor.in_channels
    labelled, sources = np.zeros(k), []
    for root in roots:
        labelled += SeedLayoutDataset(root, "train", k, bands).class_counts()[:k]
        sources += [r.source for r in read_manifest(Path(root)) or [] if r.split == "train" and r.source]
    sources = sorted(set(sources))
    if not sources:
        raise InputError(f"{roots[0]}: its manifest names no source raster, so the class shares of its ground "
                         "cannot be fitted")
    window = int(predictor.train_tile or PRIOR_WINDOW)
    readers = [EmbeddingReader(source, bands=bands) for source in sources]
    try:
        area = sum(r.height * r.width for r in readers)
        step = max(1, int(np.ceil(np.sqrt(area / max_pixels))))
        samples, ground, valid_total = [], [], 0
        for reader in readers:
            ground.append({"source": str(reader.path), "crs": reader.crs.to_wkt() if reader.crs else None,
                           "bounds": list(reader.bounds)})
            wh, ww = min(window, reader.height), min(window, reader.width)
            rows, cols = window_starts(reader.height, wh, wh), window_starts(reader.width, ww, ww)
            for r, (r0, r1) in zip(rows, _owned(rows, wh)):
                for c, (c0, c1) in zip(cols, _owned(cols, ww)):
                    box = Box(r, c, wh, ww)
                    block = reader.read(box)
                    own = np.zeros((wh, ww), dtype=bool)
                    own[r0 - r:r1 - r, c0 - c:c1 - c] = True
                    valid = block.valid & own
                    grid = valid & ((np.arange(r, r + wh) % step == 0)[:, None]) & (np.arange(c, c + ww) % step == 0)
                    valid_total += int(valid.sum())
                    if not grid.any():
                        continue
                    logits = torch.from_numpy(predictor.predict(block.embeddings(box)[None])[0])  # (K, h, w)
                    samples.append(torch.softmax(logits.double(), dim=0).permute(1, 2, 0).numpy()[grid])
    finally:
        for reader in readers:
            reader.close()
    probs = np.concatenate(samples) if samples else np.zeros((0, k))
    pi = np.asarray(train_counts, dtype=np.float64)[:k]
    shares, iterations = em_shares(probs, pi / max(pi.sum(), 1.0), labelled, valid_total / max(len(probs), 1))
    return ScenePrior([float(v) for v in shares], [float(v) for v in pi / max(pi.sum(), 1.0)], ground,
                      int(labelled.sum()), int(len(probs)), iterations)


def fit_trust(
    model: torch.nn.Module | Predictor,
    data_root: str | Path,
    num_classes: int,
    in_channels: int,
    *,
    calibration_split: str = "val",
    applicability_split: str | None = "train",
    device: str | torch.device = "cpu",
    regions=None,
    exclude_regions=None,
    seed: int = 0,
    applicability_roots=(),
    prior_roots=(),
) -> TrustFit:
    """Fit the temperature on ``calibration_split`` and (optionally) the area of applicability on ``applicability_split``.

    ``applicability_roots`` are more datasets the model was trained on (a fine-tune's patch tiles): their
    ``applicability_split`` tiles, unfiltered by region, describe the training data too. With
    ``prior_roots`` (a fine-tune's patch datasets) the class shares of their ground are fitted too
    (:func:`fit_scene_prior`, with the new temperature) and stored as the calibration's ``scene_prior``.

    A model is run through :meth:`Predictor.wrap` on ``device``, in fp32 in eval mode, as it is; a
    Predictor is used as it is (``device`` ignored; give it fp32 and unprepared for results that do
    not depend on the machine's bf16 support, as :func:`calibrate_checkpoint` does).
    """
    predictor = model if isinstance(model, Predictor) else Predictor.wrap(model, device, "fp32")
    kw = dict(num_classes=num_classes, in_channels=in_channels, regions=regions, exclude_regions=exclude_regions)
    cal_set = SeedLayoutDataset(data_root, calibration_split, **kw)
    new_ground = [n for n in cal_set.names if n in set(_new_ground(Path(data_root), calibration_split))]
    if new_ground:
        cal_set = SeedLayoutDataset(data_root, calibration_split, **kw, names=new_ground)
    if len(cal_set) == 0:
        raise InputError(f"{data_root}: split {calibration_split!r} has no tiles to calibrate on")
    logits, labels = _calibration_sample(predictor, cal_set, seed)
    temperature = fit_temperature(logits, labels)
    acc = ReliabilityAccumulator({"before": 1.0, "after": temperature})
    acc.update(logits.T[None, :, :, None], labels[None, :, None])  # (1, K, N, 1) and (1, N, 1)
    calibration = {
        "temperature": temperature, "split": calibration_split, "pixels": int(labels.numel()),
        "scenes": "new" if new_ground else "all",
        "ece_before": acc.result("before").ece, "ece_after": acc.result("after").ece,
    }
    scene_prior = None
    if prior_roots:
        old, predictor.temperature = predictor.temperature, temperature
        try:
            train_counts = SeedLayoutDataset(data_root, "train", **kw).class_counts()
            scene_prior = fit_scene_prior(predictor, list(prior_roots), train_counts)
        finally:
            predictor.temperature = old
        calibration["scene_prior"] = scene_prior.to_dict()
    applicability = None
    if applicability_split is not None:
        if not hasattr(predictor.model, "forward_with_features"):
            raise ConfigError(f"{type(predictor.model).__name__} exposes no decoder features: no area of applicability")
        train_sets = [SeedLayoutDataset(data_root, applicability_split, **kw)]
        train_sets += [SeedLayoutDataset(root, applicability_split, num_classes, in_channels)
                       for root in applicability_roots]
        features, inputs, folds = _training_features(predictor, train_sets, seed)
        applicability = fit_applicability(features, folds, seed=seed, pool=POOL)
        applicability.inputs = fit_applicability(inputs, folds, seed=seed, pool=4 * POOL)
    fit = TrustFit(calibration, applicability, scene_prior)
    log.debug("trust: %s", fit.summary())
    return fit


def calibrate_checkpoint(
    model: ModelSpec | str | Path,
    data_root: str | Path,
    out: str | Path,
    *,
    calibration_split: str = "val",
    applicability_split: str | None = "train",
    regions=None,
    exclude_regions=None,
    seed: int = 0,
    applicability_roots=(),
    prior_roots=(),
    **options,
) -> TrustFit:
    """Fit the trust record of the checkpoint ``model`` (a ModelSpec, or its weights with ``options``,
    ModelSpec fields; the device then defaults to ``cpu``) and write the calibrated checkpoint to ``out``.

    The model runs in fp32 on the spec's device as it was trained, whatever its precision says: the
    record does not depend on the machine. ``out`` may be the weights themselves only for the training
    loop's own best checkpoint; the CLI refuses it. A published MADS state_dict becomes a
    self-describing dunemap checkpoint with its text inside.
    """
    spec = ModelSpec.of(model, path_device="cpu", **options)
    device = resolve_device(spec.device)
    loaded = load_model(spec)
    predictor = Predictor(loaded, device, "fp32", prepare=False)
    split = applicability_split if hasattr(loaded.model, "forward_with_features") else None
    fit = fit_trust(predictor, data_root, len(loaded.class_names), loaded.config.in_channels,
                    calibration_split=calibration_split, applicability_split=split,
                    regions=regions, exclude_regions=exclude_regions, seed=seed,
                    applicability_roots=applicability_roots, prior_roots=prior_roots)
    save_checkpoint(out, loaded.model.cpu(), loaded.class_names, loaded.colors, loaded.text_source,
                    metrics=loaded.metrics, calibration=fit.calibration,
                    applicability=None if fit.applicability is None else fit.applicability.to_dict())
    return fit


__all__ = ["TrustFit", "calibrate_checkpoint", "fit_scene_prior", "fit_trust"]
