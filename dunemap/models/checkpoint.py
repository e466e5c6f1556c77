"""Checkpoints: dunemap's self-describing files and the published MADS ``state_dict`` layout.

A dunemap checkpoint is a dict saved with ``torch.save`` and loaded with ``weights_only=True``::

    format        "dunemap-checkpoint", version 1
    model_config  ModelConfig.to_dict()
    state_dict    the model's parameters (the MADS key layout)
    text          {"embeddings": (K, D) float32 tensor or None, "source": provenance dict}
    classes       {"names": [...], "colors": [[r, g, b], ...]}
    train_state   optimizer/scheduler/RNG/epoch counters for --resume (None in exported weights)
    metrics       the validation metrics of the epoch it was saved at
    calibration   {"temperature": T, "split": ..., "ece_before": ..., "ece_after": ...} or {} (uncalibrated)
    applicability the area-of-applicability record (``dunemap.trust.applicability``) or None

A published MADS file is a bare ``state_dict``; its sizes are inferred from tensor shapes and its
text embeddings (the seed's ``text_embeds_detailed.npy``) must be given alongside. Which text a
loaded model uses is decided by :mod:`dunemap.knowledge.sources`, the one text-source resolver.
Running a loaded model is the runtime's job (:class:`dunemap.runtime.Predictor`).
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dunemap.errors import CheckpointError
from dunemap.io.atomic import atomic_path
from dunemap.knowledge.catalog import Catalog, load_catalog
from dunemap.knowledge.sources import checkpoint_text
from dunemap.models.registry import build_model, config_from_dict
from dunemap.models.segformer import MODEL_VARIANTS, ModelConfig, TextFusedSegFormer

FORMAT = "dunemap-checkpoint"
VERSION = 1


@dataclass
class LoadedCheckpoint:
    """A model rebuilt from a checkpoint, in eval mode, with its classes and text attached."""

    model: TextFusedSegFormer
    config: ModelConfig
    class_names: list[str]
    colors: list[tuple[int, int, int]]
    text_source: dict = field(default_factory=dict)
    train_state: dict | None = None
    metrics: dict = field(default_factory=dict)
    path: Path | None = None
    calibration: dict = field(default_factory=dict)  # {} for an uncalibrated model (a published MADS file)
    applicability: dict | None = None
    sha256: str | None = None  # SHA-256 of the checkpoint file's bytes as loaded (None: built in memory)

    @property
    def temperature(self) -> float:
        """The fitted softmax temperature (1.0 when the model was never calibrated)."""
        return float(self.calibration.get("temperature", 1.0))


def save_checkpoint(
    path: str | Path,
    model: TextFusedSegFormer,
    class_names: list[str],
    colors: list[tuple[int, int, int]],
    text_source: dict | None = None,
    train_state: dict | None = None,
    metrics: dict | None = None,
    calibration: dict | None = None,
    applicability: dict | None = None,
) -> Path:
    """Write a self-describing checkpoint atomically (temp file + rename). The model's text buffer is saved too."""
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    if len(class_names) != model.config.num_classes or len(colors) != model.config.num_classes:
        raise CheckpointError(
            f"{path}: {len(class_names)} class names / {len(colors)} colours for a {model.config.num_classes}-class model"
        )
    check_finite(model.state_dict(), f"{path}: refusing to save a checkpoint")
    text = model.text_embeddings
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "text": {"embeddings": None if text is None else text.detach().cpu(), "source": dict(text_source or {})},
        "classes": {"names": list(class_names), "colors": [list(map(int, c)) for c in colors]},
        "train_state": train_state,
        "metrics": dict(metrics or {}),
        "calibration": dict(calibration or {}),
        "applicability": applicability,
    }
    # written through a file object: torch names the archive inside after a path it is given (here the temporary
    # one), so the same checkpoint saved twice would differ in bytes and SHA-256, the key of its cached exports
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(payload, f)
    return Path(path)


def check_finite(state_dict: dict, what: str) -> None:
    """Raise CheckpointError (starting with ``what``) when a floating-point tensor of ``state_dict`` holds NaN or inf.

    A model whose weights are not all finite predicts one class everywhere: such a checkpoint is
    never written, nor loaded for mapping or evaluation.
    """
    bad = [k for k, v in state_dict.items()
           if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{what}: {len(bad)} parameter tensor(s) are not finite (NaN or inf), e.g. {bad[0]}; "
                              "the training diverged (try a lower --lr)")


def _read(path: Path) -> tuple[dict, str]:
    """The checkpoint's object and the SHA-256 of the very bytes it was loaded from (a file replaced while it
    is read cannot give one model and another file's hash)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({exc.strerror or type(exc).__name__})") from None
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign pickles
        text = str(exc).strip()
        found = re.search(r"GLOBAL (\S+)", text)  # weights_only refused a Python object: never unpickled
        if found:
            raise CheckpointError(
                f"{path}: holds Python objects beyond tensors ({found.group(0)}); dunemap never unpickles those, as "
                "loading them can run any code. If you trust the file's source, load it in your own Python session "
                "and torch.save only its tensors (a state_dict) to a new file; dunemap loads that") from None
        torch_advice = ("Weights only load failed", "Please file an issue", "Check the documentation")
        lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith(torch_advice)]
        first = lines[0] if lines else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({first})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict, found {type(obj).__name__}")
    return obj, hashlib.sha256(data).hexdigest()


def infer_mads_config(state_dict: dict, source: str = "state_dict") -> ModelConfig:
    """Infer a ModelConfig from a MADS-layout ``state_dict`` from tensor shapes alone.

    Stage widths, depths, input bands, spatial-reduction ratios, decoder width, classes and text
    width come from shapes; heads follow the MiT rule of one head of width ``embed_dims[0]`` in
    stage 1 (so ``heads[i] = embed_dims[i] // embed_dims[0]``); the fusion stage is the stage whose
    width matches the cross-attention's query projection.
    """
    try:
        dims = tuple(int(state_dict[f"patch_embeds.{i}.proj.weight"].shape[0]) for i in range(4))
        in_channels = int(state_dict["patch_embeds.0.proj.weight"].shape[1])
        pred = state_dict["decode_head.linear_pred.weight"]
    except KeyError as exc:
        raise CheckpointError(f"{source}: not a SegFormer checkpoint in the MADS layout (missing {exc})") from None
    depths = tuple(
        len({m.group(1) for k in state_dict if (m := re.match(rf"blocks\.{i}\.(\d+)\.", k))}) for i in range(4)
    )
    sr = tuple(
        int(state_dict[f"blocks.{i}.0.attn.sr.weight"].shape[-1]) if f"blocks.{i}.0.attn.sr.weight" in state_dict else 1
        for i in range(4)
    )
    heads = tuple(max(1, d // dims[0]) for d in dims)
    fusion, stage, text_dim = "none", 3, 512
    if "alignment_module.vis_proj_q.weight" in state_dict:
        fusion = "cross_attn"
        q_dim = int(state_dict["alignment_module.vis_proj_q.weight"].shape[0])
        stage = max(i for i, d in enumerate(dims) if d == q_dim)
        text_dim = int(state_dict["alignment_module.text_proj_k.weight"].shape[1])
    name = next(
        (n for n, v in MODEL_VARIANTS.items() if v.embed_dims == dims and v.depths == depths), "custom"
    )
    hidden = int(state_dict["blocks.0.0.mlp.fc1.weight"].shape[0]) // dims[0]
    return ModelConfig(
        name=name, embed_dims=dims, depths=depths, heads=heads, sr_ratios=sr, mlp_ratio=hidden,
        decoder_dim=int(pred.shape[1]), in_channels=in_channels, num_classes=int(pred.shape[0]),
        fusion=fusion, fusion_stage=stage, text_dim=text_dim,
    )


def _load_state(model: TextFusedSegFormer, state_dict: dict, source: str) -> None:
    """Give ``model`` (built on the meta device: no memory, no random initialisation) the weights of
    ``state_dict``, each cast to the model's own dtype; a weight missing or left over is an error."""
    own = model.state_dict()
    state = {k: v.to(own[k].dtype) if k in own and v.dtype != own[k].dtype else v for k, v in state_dict.items()}
    result = model.load_state_dict(state, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{source}: weights do not fit the model: missing {result.missing_keys[:5]}"
            f"{'...' if len(result.missing_keys) > 5 else ''}, unexpected {result.unexpected_keys[:5]}"
            f"{'...' if len(result.unexpected_keys) > 5 else ''}"
        )


def _default_classes(num_classes: int) -> tuple[list[str], list[tuple[int, int, int]]]:
    catalog = load_catalog()
    if catalog.num_classes == num_classes:
        return list(catalog.names), [tuple(c) for c in catalog.colors]
    rng = np.random.default_rng(0)
    return [f"class_{i}" for i in range(num_classes)], [tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(num_classes)]


def load_checkpoint(
    path: str | Path,
    text_embeddings: "np.ndarray | torch.Tensor | str | Path | None" = None,
    catalog: "str | Path | Catalog | None" = None,
    replace_text: bool = False,
) -> LoadedCheckpoint:
    """Rebuild the model of a dunemap checkpoint or a published MADS ``state_dict`` (eval mode).

    The text comes from :func:`dunemap.knowledge.sources.checkpoint_text`: a dunemap checkpoint
    uses the text it carries (``text_embeddings`` (a (K, D) matrix or .npy) with other rows is an
    error unless ``replace_text``); a MADS file of a fused model needs ``text_embeddings``.
    ``catalog`` is checked against the catalog the checkpoint was trained with; for an
    open-vocabulary model (``head="text"``) a different catalog becomes the new class set, any number of classes.
    """
    path = Path(path)
    obj, sha256 = _read(path)
    if obj.get("format") == FORMAT:
        config = config_from_dict(obj["model_config"])
        state_dict = obj["state_dict"]
        text = obj["text"]["embeddings"]
        names = list(obj["classes"]["names"])
        colors = [tuple(c) for c in obj["classes"]["colors"]]
        text_source = dict(obj["text"].get("source") or {})
        train_state, metrics = obj.get("train_state"), dict(obj.get("metrics") or {})
        calibration, applicability = dict(obj.get("calibration") or {}), obj.get("applicability")
    else:
        state_dict = obj.get("state_dict", obj) if isinstance(obj.get("state_dict"), dict) else obj
        if not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
            raise CheckpointError(f"{path}: neither a dunemap checkpoint nor a plain state_dict of tensors")
        config = infer_mads_config(state_dict, str(path))
        names, colors = _default_classes(config.num_classes)
        text, text_source, train_state, metrics = None, {}, None, {}
        calibration, applicability = {}, None
    check_finite(state_dict, f"{path}: unusable checkpoint")
    with torch.device("meta"):  # every weight comes from the file: initialising them first cost a third of a load
        model = build_model(config)
    _load_state(model, state_dict, str(path))
    if isinstance(text_embeddings, torch.Tensor):
        text_embeddings = text_embeddings.detach().cpu().numpy()
    resolved = checkpoint_text(
        str(path), None if text is None else text.numpy(), text_source, names, colors, uses_text=model.uses_text,
        open_vocabulary=model.open_vocabulary, text_embeddings=text_embeddings, catalog=catalog,
        replace_text=replace_text,
    )
    if resolved.matrix is not None:
        model.set_text(torch.from_numpy(resolved.matrix))
    model.eval()
    if model.config.fusion != "none" and resolved.source.get("embeddings_sha256") != text_source.get("embeddings_sha256"):
        # other text changed every feature through the cross-attention: what was fitted on them no longer holds
        calibration, applicability = {}, None
    # An open-vocabulary model has no cross-attention: its features, and so its area of applicability, do not
    # depend on the class texts, and its temperature scales every class's logit alike (old classes' logits are
    # unchanged by a new class; the new class itself is uncalibrated, see docs/knowledge.md).
    return LoadedCheckpoint(model, config, resolved.class_names, resolved.colors, resolved.source, train_state,
                            metrics, path, calibration, applicability, sha256)
