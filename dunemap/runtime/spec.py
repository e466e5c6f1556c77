"""ModelSpec: where a model comes from and how it runs, the one value every loader, config and executor passes.

Evaluation (``EvalConfig.model``), mapping (``map_inputs``, ``map_many``, the local and Dask
executors), calibration and the API all carry one :class:`ModelSpec` to
:func:`dunemap.runtime.load_predictor` instead of its six fields one by one; the command-line
options ``--weights``, ``--device``, ``--precision``, ``--text-embeddings``, ``--catalog`` and
``--replace-text`` take their defaults from it (:mod:`dunemap.cli.options`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class ModelSpec:
    """A checkpoint and how to run it. Frozen and hashable: a Dask worker keys its loaded model by it."""

    weights: str | os.PathLike  # a dunemap checkpoint or a published MADS state_dict (.pth)
    device: str = "auto"  # auto, cpu, cuda or cuda:N; resolved where the model runs (resolve_device)
    precision: str = "auto"  # auto, fp32 or bf16 autocast; resolved on the device (resolve_precision)
    text_embeddings: str | os.PathLike | None = None  # (K, D) .npy of class texts; needed only for a MADS state_dict
    catalog: str | os.PathLike | None = None  # checked against the checkpoint's; an open-vocabulary model's classes
    replace_text: bool = False  # let text_embeddings replace the class text a dunemap checkpoint carries

    @classmethod
    def of(cls, model: ModelSpec | str | os.PathLike, *, path_device: str | None = None, **options) -> ModelSpec:
        """``model`` itself with ``options`` (ModelSpec fields) replacing its fields, or the spec of the
        weights path ``model`` with ``options`` (its device ``path_device`` when they give none and it is given:
        the library's low-level calls on a bare path run on the CPU unless told, as they always have)."""
        if isinstance(model, ModelSpec):
            return replace(model, **options) if options else model
        if path_device is not None:
            options.setdefault("device", path_device)
        return cls(model, **options)

    def files(self) -> list[str | os.PathLike | None]:
        """The files the model is read from (None where not given): no output may be one of them."""
        return [self.weights, self.text_embeddings, self.catalog]


__all__ = ["ModelSpec"]
