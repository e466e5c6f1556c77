"""The Predictor: the one way dunemap runs a model forward — mapping, the API, evaluation, validation,
calibration and the speed benchmark all predict through it.

:func:`load_predictor` turns a :class:`~dunemap.runtime.spec.ModelSpec` into a Predictor: it loads the
checkpoint (:func:`dunemap.models.checkpoint.load_checkpoint`), resolves the device and precision
(:mod:`dunemap.runtime.device`) and attaches the checkpoint's temperature and area of applicability.
A Predictor either *prepares* its model for fast inference (channels-last; in bf16 the weights are
rounded once), as mapping does, or runs it as it is (``prepare=False``: its layout and float32
weights, per-call autocast), as evaluation, validation and trust fitting do, so their numbers are
those of the model as trained.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from dunemap.errors import CheckpointError
from dunemap.io.aef import dequantize
from dunemap.models.checkpoint import LoadedCheckpoint, load_checkpoint
from dunemap.runtime.device import autocast, resolve_device, resolve_precision
from dunemap.runtime.spec import ModelSpec
from dunemap.trust.applicability import Applicability
from dunemap.trust.prior import ScenePrior

# Modules whose ops autocast runs in bf16 anyway (matmuls and convolutions): their weights are cast once.
_AUTOCAST_LOW_PRECISION = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d,
                           torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)


def cast_autocast_weights(model: torch.nn.Module, dtype: torch.dtype = torch.bfloat16) -> torch.nn.Module:
    """Cast, in place, the weights of the layers autocast would cast to ``dtype`` on every call.

    Under ``torch.autocast(dtype=bf16)`` linear and convolution layers compute in bf16 from weights
    rounded afresh at each call; rounding them once gives the same numbers without the per-call
    copies. Norms, the text buffer and everything autocast keeps in float32 stay float32, so the
    model must still run under autocast.
    """
    for module in model.modules():
        if isinstance(module, _AUTOCAST_LOW_PRECISION):
            module.to(dtype)
    return model


class Predictor:
    """Inference wrapper: device placement, autocast (:func:`dunemap.runtime.autocast`), float32 logits out.

    Prepared (the default), the model runs channels-last and, with ``precision="bf16"``, its linear
    and convolution weights are rounded to bf16 once (:func:`cast_autocast_weights`) under bf16
    autocast, which keeps norms, softmax and the residual stream in float32: the logits equal those
    of per-call autocast on float32 weights, a few per cent sooner. :attr:`input_dtype` is the dtype
    the first layer consumes; an input already in that dtype, channels-last, on the device is used
    without a copy. With ``prepare=False`` the model keeps its layout and weights and inputs are only
    moved to the device.

    :meth:`predict` gives calibrated logits (divided by the checkpoint's temperature), :meth:`forward`
    the model's own.
    """

    def __init__(self, loaded: LoadedCheckpoint, device: str | torch.device = "cpu", precision: str = "auto",
                 *, prepare: bool = True):
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        self.prepared = prepare
        model = loaded.model.to(self.device).eval()
        if prepare:
            model = model.to(memory_format=torch.channels_last)
            if self.precision == "bf16":
                cast_autocast_weights(model, torch.bfloat16)
        self.model = model
        self.input_dtype = torch.bfloat16 if prepare and self.precision == "bf16" else torch.float32
        self.config = loaded.config
        self.path = loaded.path  # the checkpoint file (provenance), None when built in memory
        self.checkpoint_sha256 = loaded.sha256  # SHA-256 of the bytes the model was loaded from (provenance, resume)
        self.class_names = loaded.class_names
        self.colors = loaded.colors
        self.text_source = loaded.text_source
        self.in_channels = loaded.config.in_channels
        self.num_classes = len(loaded.class_names)
        self.calibration = loaded.calibration  # {} for an uncalibrated model
        self.temperature = loaded.temperature  # predict divides the logits by it: calibrated probabilities
        self.train_tile = loaded.metrics.get("tile")  # training tile side (px); None for older or published files
        prior = self.calibration.get("scene_prior")
        self.scene_prior = None if prior is None else ScenePrior.from_dict(prior, str(loaded.path))
        self.class_bias: torch.Tensor | None = None  # (K,) added to the calibrated logits: set by use_ground
        self.applicability = None
        if loaded.applicability is not None:
            self.applicability = Applicability.from_dict(loaded.applicability, str(loaded.path))

    @classmethod
    def wrap(cls, model: torch.nn.Module, device: str | torch.device, precision: str = "fp32",
             class_names: list[str] | None = None, colors: list[tuple[int, int, int]] | None = None) -> Predictor:
        """A Predictor around a live model (one being trained or fitted, or a benchmark's), run as it is:
        never prepared (its weights stay the trainer's), uncalibrated, no area of applicability."""
        names = list(class_names) if class_names is not None else [f"class_{i}" for i in range(model.config.num_classes)]
        colors = [tuple(c) for c in colors] if colors is not None else [(0, 0, 0)] * len(names)
        return cls(LoadedCheckpoint(model, model.config, names, colors), device, precision, prepare=False)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        if not self.prepared:
            return x.to(self.device)
        return x.to(device=self.device, dtype=self.input_dtype, memory_format=torch.channels_last)

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's own logits (B, K, H, W) for x (B, in_channels, H, W), in the dtype autocast leaves them."""
        x = self._input(x)
        with autocast(self.device, self.precision):
            return self.model(x)

    @torch.inference_mode()
    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's own logits (B, K, H, W) and its decoder features (B, D, h, w)."""
        x = self._input(x)
        with autocast(self.device, self.precision):
            return self.model.forward_with_features(x)

    @torch.inference_mode()
    def forward_with_dissimilarity(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's own logits (B, K, H, W) and the dissimilarity index (B, H, W) float32, on the CPU.

        The DI is searched on the decoder's features (pooled to 1/8 resolution by checkpoints fitted since
        the pooling; older ones at 1/4) and, where the record has one, on the input averaged over the same
        cells, then upsampled bilinearly (:meth:`Applicability.dissimilarity_map`).
        """
        if self.applicability is None:
            raise CheckpointError("this checkpoint has no area of applicability; fit one with dunemap calibrate")
        x = self._input(x)
        with autocast(self.device, self.precision):
            logits, features = self.model.forward_with_features(x)  # (B, K, H, W), (B, D, h, w)
        return logits, self.applicability.dissimilarity_map(features, x)

    @torch.inference_mode()
    def predict(self, x: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Calibrated logits (B, K, H, W) float32 (divided by the temperature) for x (B, in_channels, H, W).

        ``x`` may also be a numpy array, (B, C, H, W) or one (C, H, W) image, float or AEF int8 codes
        (de-quantised); the logits then come back as a numpy array of the same rank. One forward pass
        over the whole input: for sliding windows blended as ``map`` does, use ``dunemap.predict_array``.
        """
        if isinstance(x, np.ndarray):
            return self.predict_numpy(x)
        return self.calibrated(self.forward(x))

    @torch.inference_mode()
    def predict_with_dissimilarity(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Calibrated logits (B, K, H, W) and the dissimilarity index (B, H, W) float32 of each pixel, on the
        logits' device (see :meth:`forward_with_dissimilarity`)."""
        logits, di = self.forward_with_dissimilarity(x)
        return self.calibrated(logits), di.to(logits.device)

    def predict_numpy(self, x: np.ndarray, predict=None) -> np.ndarray:
        """:meth:`predict` of a numpy array (see there); ``predict`` replaces this Predictor's own on the tensor."""
        single = x.ndim == 3
        batch = x[None] if single else x
        if batch.ndim != 4:
            raise CheckpointError(f"array of shape {x.shape}: expected (C, H, W) or (B, C, H, W)")
        if batch.dtype == np.int8:
            batch = np.stack([dequantize(image)[0] for image in batch])
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        logits = (predict or self.predict)(x).cpu().numpy()
        return logits[0] if single else logits

    def use_ground(self, crs, bounds) -> bool:
        """Use the checkpoint's class shares of new ground (:class:`ScenePrior`) in :meth:`predict` when a raster
        in ``crs`` with ``bounds`` (w, s, e, n) overlaps that ground, else the training shares; returns
        whether they are used. Mapping calls it for each raster; other predictions never use them."""
        use = self.scene_prior is not None and self.scene_prior.covers(crs, bounds)
        self.class_bias = torch.from_numpy(self.scene_prior.bias()) if use else None
        return use

    def calibrated(self, logits: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """The model's own logits (B, K, h, w) made calibrated: divided by the temperature, plus the class bias in
        use (float32); a numpy array (an export's) is calibrated in numpy, on this thread."""
        if isinstance(logits, np.ndarray):
            logits = logits.astype(np.float32, copy=False)
            logits = logits if self.temperature == 1.0 else logits / np.float32(self.temperature)
            if self.class_bias is not None:
                logits = logits + self.class_bias.float().cpu().numpy()[:, None, None]
            return logits
        logits = logits.float()
        logits = logits if self.temperature == 1.0 else logits / self.temperature
        if self.class_bias is not None:
            logits = logits + self.class_bias.to(logits.device)[:, None, None]
        return logits


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over axis 1 of (B, K, h, w) float32 ``logits``, in place (numpy, this thread); returns them."""
    logits -= logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)
    return logits


def load_model(spec: ModelSpec) -> LoadedCheckpoint:
    """The checkpoint of ``spec`` with its text resolved (:func:`dunemap.models.checkpoint.load_checkpoint`)."""
    return load_checkpoint(spec.weights, spec.text_embeddings, spec.catalog, spec.replace_text)


def load_predictor(model: ModelSpec | str | os.PathLike, *, gpu_index: int = 0, prepare: bool = True,
                   **options) -> Predictor:
    """Load a checkpoint (dunemap or MADS layout) ready to predict: the one entry from a :class:`ModelSpec`.

    ``model`` is a ModelSpec (``options``, ModelSpec fields, replace its fields) or a weights path with
    ``options``; from a bare path the device defaults to ``cpu``, as :class:`Predictor`'s does (the
    configs, commands and ``dunemap.load_predictor`` default to ``auto``). ``gpu_index`` is the GPU
    that device ``auto`` or ``cuda`` means (a Dask worker's slot, a torchrun rank's GPU).
    """
    spec = ModelSpec.of(model, path_device="cpu", **options)
    device = resolve_device(spec.device, gpu_index)
    return Predictor(load_model(spec), device, spec.precision, prepare=prepare)


__all__ = ["Predictor", "cast_autocast_weights", "load_model", "load_predictor", "softmax"]
