"""Block prediction: run the model over a block's own windows, blend, and finish blocks from contributions.

A block's *contribution* is the weighted sum of softmax probabilities of the windows it owns over
its extent, plus the sum of weights. :func:`split_contribution` cuts it into one *part* per block
whose core it touches; :func:`finish_block` adds the parts of all contributors of a block in
ascending block order (a fixed order, so the result is the same whatever order blocks were
predicted in), normalises, and returns classes, confidence and probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

import numpy as np
import rasterio
import torch

from dunemap.errors import InputError
from dunemap.mapping.config import MapConfig
from dunemap.mapping.legend import NODATA_CLASS
from dunemap.mapping.reader import BlockData, EmbeddingReader
from dunemap.mapping.windows import Block, Box, blend_weights

GDAL_READ_CACHE_BYTES = 256 * 1024 * 1024  # GDAL block cache while reading: part of the mapping memory budget


class SupportsPredict(Protocol):
    """What mapping needs of a model: ``dunemap.models.checkpoint.Predictor`` provides it."""

    num_classes: int

    def predict(self, x: torch.Tensor) -> torch.Tensor: ...


@dataclass
class Part:
    """Blending sums of one block's windows over a box (inside another block's core, or its own)."""

    source: int  # index of the block whose windows these are
    box: Box  # raster pixels covered
    acc: np.ndarray  # (K, h, w) float32 sum of weight * probability
    wsum: np.ndarray  # (h, w) float32 sum of weights
    valid: np.ndarray  # (h, w) bool, False = nodata


@dataclass
class Contribution(Part):
    """The blending sums of a block's own windows over its whole extent."""

    windows_predicted: int = 0
    windows_skipped: int = 0  # windows entirely nodata: the model never ran on them


@dataclass
class BlockPrediction:
    """The finished result of one block's core."""

    index: int
    classes: np.ndarray  # (h, w) uint8 class ids, 255 = nodata
    confidence: np.ndarray  # (h, w) float32 maximum probability, NaN = nodata
    probabilities: np.ndarray  # (K, h, w) float32 blended softmax, NaN = nodata


def predict_block_data(data: BlockData, predictor: SupportsPredict, block: Block, config: MapConfig) -> Contribution:
    """Predict the windows ``block`` owns from its already-read ``data`` (its extent) and blend them.

    Windows run through the model ``config.batch_size`` at a time in the block's window order and
    are accumulated in that order; windows without a single valid pixel are skipped.
    """
    if block.extent is None:
        raise InputError(f"block {block.index} owns no windows; it is finished from its neighbours' contributions")
    ext = block.extent
    k = predictor.num_classes
    acc = np.zeros((k, ext.height, ext.width), dtype=np.float32)
    wsum = np.zeros((ext.height, ext.width), dtype=np.float32)
    windows = [w for w in block.windows if data.valid_in(w).any()]
    if windows:
        weights = blend_weights(windows[0].shape, config.blend)
        for start in range(0, len(windows), config.batch_size):
            batch = windows[start : start + config.batch_size]
            x = torch.from_numpy(np.stack([data.embeddings(w) for w in batch]))  # (B, C, h, w)
            probs = torch.softmax(predictor.predict(x), dim=1).numpy()  # (B, K, h, w)
            for win, p in zip(batch, probs):
                r = win.relative_to(ext)
                acc[:, r.row : r.row_stop, r.col : r.col_stop] += p * weights
                wsum[r.row : r.row_stop, r.col : r.col_stop] += weights
    valid = data.valid_in(ext).copy()
    return Contribution(block.index, ext, acc, wsum, valid, len(windows), len(block.windows) - len(windows))


def predict_block(
    reader: EmbeddingReader, predictor: SupportsPredict, block: Block, config: MapConfig
) -> Contribution:
    """Read ``block``'s extent from ``reader`` and predict it (a self-contained task for a worker)."""
    if block.extent is None:
        raise InputError(f"block {block.index} owns no windows; it is finished from its neighbours' contributions")
    with rasterio.Env(GDAL_CACHEMAX=GDAL_READ_CACHE_BYTES):
        data = reader.read(block.extent)
    return predict_block_data(data, predictor, block, config)


def split_contribution(contribution: Contribution, blocks: Sequence[Block]) -> dict[int, Part]:
    """Cut a contribution into parts, one per target block (the blocks whose core its extent overlaps)."""
    out: dict[int, Part] = {}
    for t in blocks[contribution.source].targets:
        inter = contribution.box.intersection(blocks[t].core)
        if inter is None:
            continue
        r = inter.relative_to(contribution.box)
        rows, cols = slice(r.row, r.row_stop), slice(r.col, r.col_stop)
        out[t] = Part(contribution.source, inter, contribution.acc[:, rows, cols], contribution.wsum[rows, cols],
                      contribution.valid[rows, cols])
    return out


def finish_block(block: Block, parts: Mapping[int, Part]) -> BlockPrediction:
    """Sum the parts of every contributor of ``block`` (ascending block order) and classify its core."""
    missing = [s for s in block.contributors if s not in parts]
    if missing:
        raise InputError(f"block {block.index} cannot be finished: no contribution yet from block(s) {missing}")
    core = block.core
    k = parts[block.contributors[0]].acc.shape[0]
    acc = np.zeros((k, core.height, core.width), dtype=np.float32)
    wsum = np.zeros(core.shape, dtype=np.float32)
    valid = np.zeros(core.shape, dtype=bool)
    for s in block.contributors:
        p = parts[s]
        r = p.box.relative_to(core)
        rows, cols = slice(r.row, r.row_stop), slice(r.col, r.col_stop)
        acc[:, rows, cols] += p.acc
        wsum[rows, cols] += p.wsum
        valid[rows, cols] |= p.valid
    valid &= wsum > 0
    np.divide(acc, wsum, out=acc, where=valid[np.newaxis])
    acc[:, ~valid] = np.nan
    classes = np.full(core.shape, NODATA_CLASS, dtype=np.uint8)
    confidence = np.full(core.shape, np.nan, dtype=np.float32)
    if valid.any():
        pv = acc[:, valid]  # (K, n_valid)
        classes[valid] = pv.argmax(axis=0).astype(np.uint8)
        confidence[valid] = pv.max(axis=0)
    return BlockPrediction(block.index, classes, confidence, acc)
