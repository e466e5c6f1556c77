"""Block prediction: run the model over a block's own windows, blend, and finish blocks from contributions.

A block's *contribution* is the weighted sum of softmax probabilities of the windows it owns over
its extent, plus the sum of weights. :func:`split_contribution` cuts it into one *part* per block
whose core it touches; :func:`finish_block` adds the parts of all contributors of a block in
ascending block order (a fixed order, so the result is the same whatever order blocks were
predicted in), normalises, and returns classes, confidence and probabilities.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, TypeVar

import numpy as np
import rasterio
import torch

from dunemap.errors import InputError
from dunemap.mapping.config import MapConfig
from dunemap.mapping.decode import DECODED_DTYPES, decode_on_device, window_batch, window_codes
from dunemap.mapping.profile import StageTimes
from dunemap.mapping.windows import Block, BlockPlan, blend_weights
from dunemap.raster.geometry import Box
from dunemap.raster.legend import NODATA_CLASS
from dunemap.raster.reader import BlockData, EmbeddingReader, is_network
from dunemap.runtime import gpu_batch_size
from dunemap.runtime.engines import request_batch

T = TypeVar("T")
R = TypeVar("R")

GDAL_READ_CACHE_BYTES = 256 * 1024 * 1024  # GDAL block cache while reading: part of the mapping memory budget
GDAL_READ_CACHE_MAX_BYTES = 512 * 1024 * 1024  # the most read_layout gives a wide grid
# GDAL's own threads decompressing the tiles of one read (GDAL_NUM_THREADS; a value set in the environment wins)
GDAL_READ_THREADS = "ALL_CPUS"
GPU_BYTES_PER_WINDOW_PIXEL = 2048  # GPU memory per pixel of a window in one forward pass (input, activations, output)


class SupportsPredict(Protocol):
    """What mapping needs of a model: ``dunemap.runtime.Predictor`` provides it.

    A predictor may also name the ``input_dtype`` its first layer consumes; windows are then
    decoded straight into it (float32 otherwise); whether it takes them ``channels_last`` (the
    default) or band-interleaved (False: :func:`~dunemap.mapping.decode.window_batch`); and whether it
    ``takes_codes``: AEF int8 windows then go in undecoded, as uint8 code bits. A predictor with
    ``numpy_probabilities`` (an export) gives the softmax of its calibrated logits as numpy, computed by its engine
    or in numpy.
    """

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
    seconds: dict[str, float] = field(default_factory=dict)  # per stage (dunemap.mapping.profile.STAGES)


@dataclass
class BlockPrediction:
    """The finished result of one block's core."""

    index: int
    classes: np.ndarray  # (h, w) uint8 class ids, 255 = nodata
    confidence: np.ndarray  # (h, w) float32 maximum probability, NaN = nodata
    probabilities: np.ndarray  # (K, h, w) float32 blended softmax, NaN = nodata
    dissimilarity: np.ndarray | None = None  # (h, w) float32 blended dissimilarity index, NaN = nodata


def batch_size_for(predictor: SupportsPredict, config: MapConfig) -> int:
    """Windows per forward pass: ``config.batch_size``, or for 0 (auto) as many as fit in the free memory of
    the predictor's GPU (:func:`dunemap.runtime.gpu_batch_size`), and on a CPU as many windows as make
    :data:`~dunemap.runtime.engines.CPU_BATCH_PIXELS` (at least 1: :func:`~dunemap.runtime.engines.request_batch`)
    for each stream the predictor runs a batch in (an OpenVINO export's ``streams``; 1 for others): small windows
    then share the fixed cost of a call (the backend's dispatch, the predictor's wrapping, a softmax), which
    otherwise outweighs their inference."""
    if config.batch_size:
        return config.batch_size
    device = torch.device(getattr(predictor, "device", "cpu"))
    if device.type == "cpu":
        return request_batch(config.window * config.window) * getattr(predictor, "streams", 1)
    return gpu_batch_size(device, config.window * config.window * GPU_BYTES_PER_WINDOW_PIXEL)


def predict_block_data(data: BlockData, predictor: SupportsPredict, block: Block, config: MapConfig,
                       batch_size: int = 1) -> Contribution:
    """Predict the windows ``block`` owns from its already-read ``data`` (its extent) and blend them.

    Windows run through the model ``batch_size`` at a time in the block's window order and are
    accumulated in that order; windows without a single valid pixel are skipped. With
    ``config.prefetch`` the next batch is decoded in a background thread while the model runs; on a GPU
    only int8 codes are prepared there, in pinned memory, and decoded on the GPU (:func:`decoded_batches`).
    The contribution carries the seconds spent decoding, in the model and blending.
    """
    if block.extent is None:
        raise InputError(f"block {block.index} owns no windows; it is finished from its neighbours' contributions")
    ext = block.extent
    k = predictor.num_classes
    times = StageTimes()
    # with the area of applicability, a last channel sums weight * dissimilarity index, blended like the probabilities
    acc = np.zeros((k + int(config.applicability), ext.height, ext.width), dtype=np.float32)
    wsum = np.zeros((ext.height, ext.width), dtype=np.float32)
    windows = [w for w in block.windows if data.valid_in(w).any()]
    if windows:
        weights = blend_weights(windows[0].shape, config.blend)  # (h, w)
        dtype = getattr(predictor, "input_dtype", torch.float32)
        device = torch.device(getattr(predictor, "device", "cpu"))
        decode_on = device if device.type == "cuda" else None  # a GPU decodes the codes itself
        if getattr(predictor, "takes_codes", False) and data.data.dtype == np.int8:  # the export decodes them
            dtype = torch.uint8
        layout = getattr(predictor, "channels_last", True)
        numpy_probabilities = getattr(predictor, "numpy_probabilities", None)
        batches = [windows[s : s + batch_size] for s in range(0, len(windows), batch_size)]
        for batch, x in decoded_batches(data, batches, dtype, device, config.prefetch, times, decode_on, layout):
            with times.timed("model"):
                if config.applicability:
                    logits, di = predictor.predict_with_dissimilarity(x)  # (B, K, h, w), (B, h, w)
                    probs = torch.cat([torch.softmax(logits.float(), dim=1), di[:, None].float()], dim=1).numpy()
                elif numpy_probabilities is not None:  # an export's: by its engine, or in numpy on this thread
                    probs = numpy_probabilities(x)
                else:
                    # waits for the device: the model's time ends here
                    probs = torch.softmax(predictor.predict(x).float(), dim=1).cpu().numpy()  # (B, K, h, w)
            with times.timed("blend"):
                # numpy, one thread: torch's small in-place ops would wake its thread pool for every window,
                # and its threads wait on the backend's and the decoding thread's for the CPU
                np.multiply(probs, weights, out=probs)  # the batch's own buffer, weighted at once
                for win, p in zip(batch, probs):
                    r = win.relative_to(ext)
                    acc[:, r.row : r.row_stop, r.col : r.col_stop] += p
                    wsum[r.row : r.row_stop, r.col : r.col_stop] += weights
    valid = data.valid_in(ext).copy()
    return Contribution(block.index, ext, acc, wsum, valid, len(windows), len(block.windows) - len(windows),
                        times.seconds)


def decoded_batches(data: BlockData, batches: Sequence[Sequence[Box]], dtype: torch.dtype, device: torch.device,
                    ahead: bool, times: StageTimes, decode_on: torch.device | None = None,
                    channels_last: bool = True) -> Iterator[tuple[Sequence[Box], torch.Tensor]]:
    """Each batch of windows with its model input, the next one prepared in a background thread when ``ahead``.

    ``dtype`` uint8 (a model that takes AEF codes and decodes them itself; ``data`` int8): the codes are copied as
    they are, in the layout ``channels_last`` names. ``decode_on`` a device: int8
    codes are gathered pixel-interleaved (pinned when ``device`` is a GPU) in the background and decoded there by
    table look-up (:func:`~dunemap.mapping.decode.decode_on_device`), so only codes cross to a GPU; else windows are
    decoded on the CPU (pinned for a GPU ``device``), in the layout ``channels_last`` names. Either way the values
    are :func:`~dunemap.mapping.decode.window_batch`'s.
    """
    pin = device.type == "cuda"
    if dtype == torch.uint8:  # the model decodes the int8 codes itself: copied as they are
        def copy(batch: Sequence[Box]) -> torch.Tensor:
            with times.timed("decode"):
                return window_codes(data, batch, pin, channels_last)

        yield from prefetched(copy, batches, ahead, "dunemap-decode")
        return
    if decode_on is not None and data.data.dtype == np.int8 and dtype in DECODED_DTYPES:
        def gather(batch: Sequence[Box]) -> torch.Tensor:
            with times.timed("decode"):
                return window_codes(data, batch, pin)

        for batch, codes in prefetched(gather, batches, ahead, "dunemap-decode"):
            with times.timed("decode"):
                x = decode_on_device(codes, dtype, decode_on)
            yield batch, x
        return

    def decode(batch: Sequence[Box]) -> torch.Tensor:
        with times.timed("decode"):
            x = window_batch(data, batch, dtype, channels_last)
            return x.pin_memory() if pin else x

    yield from prefetched(decode, batches, ahead, "dunemap-decode")


def prefetched(fn: Callable[[T], R], items: Sequence[T], ahead: bool, name: str) -> Iterator[tuple[T, R]]:
    """Each item with ``fn(item)``; with ``ahead``, ``fn`` of the next item runs in a background thread
    while the caller works on this one (a queue of one: at most two results alive at a time)."""
    if not ahead or len(items) < 2:
        for item in items:
            yield item, fn(item)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=name) as pool:
        following = iter(items)  # iterated, never indexed: items may be a lazy selection of a block plan
        item = next(following)
        future = pool.submit(fn, item)
        for after in following:
            result = future.result()
            future = pool.submit(fn, after)
            yield item, result
            del result
            item = after
        yield item, future.result()


def predict_block(
    reader: EmbeddingReader, predictor: SupportsPredict, block: Block, config: MapConfig, batch_size: int = 1
) -> Contribution:
    """Read ``block``'s extent from ``reader`` and predict it (a self-contained task for a worker)."""
    if block.extent is None:
        raise InputError(f"block {block.index} owns no windows; it is finished from its neighbours' contributions")
    t0 = time.perf_counter()
    with read_env(direct=direct_reads(reader)):
        data = reader.read(block.extent)
    read = time.perf_counter() - t0
    contribution = predict_block_data(data, predictor, block, config, batch_size)
    contribution.seconds["read"] = read
    return contribution


def read_env(cache_bytes: int = GDAL_READ_CACHE_BYTES, direct: bool = False) -> rasterio.Env:
    """The GDAL settings a block is read under: ``cache_bytes`` of block cache (:func:`read_layout`) and
    :data:`GDAL_READ_THREADS` decompressing tiles (unless ``GDAL_NUM_THREADS`` is set in the environment).

    ``direct`` (:func:`direct_reads`: local pixel-interleaved GeoTIFFs) decodes each tile straight into the block,
    past GDAL's block cache (``GTIFF_DIRECT_IO``; GDAL reads it when a file is opened, so the reader's files must
    first be opened under these settings, as a map's are). A pixel-interleaved tile of 64 bands is otherwise split
    into 64 cached band blocks byte by byte and copied out of them again: 42 % of a read's samples
    (BENCHMARKS.md, issue 30).
    """
    threads = {} if "GDAL_NUM_THREADS" in os.environ else {"GDAL_NUM_THREADS": GDAL_READ_THREADS}
    return rasterio.Env(GDAL_CACHEMAX=cache_bytes, **threads, **({"GTIFF_DIRECT_IO": "YES"} if direct else {}))


def direct_reads(reader: EmbeddingReader) -> bool:
    """Whether ``reader``'s blocks are read past GDAL's block cache (:func:`read_env`): when every tile is a local,
    pixel-interleaved GeoTIFF. A band-interleaved file has no tiles to split, and the cache spares decoding again
    the stored blocks a block's halo shares with the next (reading past it took 22-37 % more CPU: BENCHMARKS.md,
    issue 30). A network tile keeps the cache, which spares fetching its stored blocks again (:func:`read_layout`),
    and so does a VRT, whose sources may be either."""
    return all(isinstance(tile.path, Path) and tile.path.suffix.lower() in (".tif", ".tiff") and tile.pixel_interleaved
               for tile in reader.tiles)


def read_layout(reader: EmbeddingReader, plan: BlockPlan, remote: bool | None = None,
                most: int = GDAL_READ_CACHE_MAX_BYTES) -> tuple[int, int]:
    """GDAL's block cache for reading ``plan``'s blocks from ``reader``, and the block columns of the vertical bands
    to read them in (:class:`~dunemap.mapping.windows.BlockSelection`; 0: row-major across the whole grid).

    From a network source (``remote``; None: whether any of the reader's tiles is one,
    :func:`dunemap.raster.reader.is_network`) the cache holds the stored blocks (all bands) that one row of map
    blocks touches, so that the next row finds the stored blocks it shares with it (its first rows) still cached
    instead of fetching them again: at least :data:`GDAL_READ_CACHE_BYTES`, at most ``most``. Where a row across
    the grid touches more, the blocks are read in vertical bands, the widest whose rows fit ``most`` (at least
    one block column): a band's edge columns of stored blocks are fetched twice instead of a row of stored blocks
    per row of map blocks. Local files are read again from the OS's page cache at little cost: row-major,
    :data:`GDAL_READ_CACHE_BYTES`, which keeps the mapping within its memory budget.
    """
    if remote is None:
        remote = any(is_network(tile.path) for tile in reader.tiles)
    cols = plan.spans(1)
    if not remote or not cols:
        return GDAL_READ_CACHE_BYTES, 0
    rows = max(e1 - e0 for e0, e1 in plan.spans(0))

    def need(width: int) -> int:  # the most a band row of ``width`` block columns touches
        return max(_row_bytes(reader, rows, cols[j][0], max(e1 for _, e1 in cols[j:j + width]))
                   for j in range(0, len(cols), width))

    width = len(cols)
    while width > 1 and need(width) > most:
        width -= 1
    return int(min(max(need(width), GDAL_READ_CACHE_BYTES), most)), 0 if width == len(cols) else width


def _row_bytes(reader: EmbeddingReader, rows: int, col0: int, col1: int) -> int:
    """The stored bytes (all bands) that ``rows`` rows of the raster's columns ``col0``..``col1`` touch."""
    item = np.dtype(reader.dtype).itemsize * reader.bands
    by_col: dict[int, int] = {}  # per column of tiles: the stored bytes of a band of ``rows`` rows across it
    for tile in reader.tiles:
        bh, bw = reader.block_shapes[tile.path]
        c0 = max(tile.col, reader.offset[1] + col0)
        c1 = min(tile.col + tile.width, reader.offset[1] + col1)
        if c1 <= c0:
            continue
        band = (-(-rows // bh) + 2) * (-(-(c1 - c0) // bw) + 1) * bh * bw * item
        by_col[tile.col] = max(by_col.get(tile.col, 0), band)
    return sum(by_col.values())


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


def finish_block(block: Block, parts: Mapping[int, Part], dissimilarity: bool = False) -> BlockPrediction:
    """Sum the parts of every contributor of ``block`` (ascending block order) and classify its core.

    ``dissimilarity``: the parts' last channel is the weighted dissimilarity index, not a class.
    """
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
    np.copyto(acc, np.nan, where=~valid)
    di = None
    if dissimilarity:
        acc, di = acc[:-1], acc[-1]
    classes, confidence = classify(acc, valid)
    return BlockPrediction(block.index, classes, confidence, acc, di)


def classify(probabilities: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The classes (h, w) uint8 (255 = not ``valid``) and confidence (h, w) float32 (NaN there) of (K, h, w)
    ``probabilities`` (NaN where not valid): the first likeliest class, as ``argmax``, and its probability.

    One pass per class over whole planes: gathering the valid pixels first and reducing the strided class axis
    took eight times as long on a 1024 px block."""
    confidence = probabilities[0].copy()
    classes = np.zeros(valid.shape, dtype=np.uint8)
    for k in range(1, probabilities.shape[0]):
        np.copyto(classes, np.uint8(k), where=probabilities[k] > confidence)  # strictly: a tie keeps the first
        np.maximum(confidence, probabilities[k], out=confidence)
    np.copyto(classes, np.uint8(NODATA_CLASS), where=~valid)
    np.copyto(confidence, np.nan, where=~valid)
    return classes, confidence
