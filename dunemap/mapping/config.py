"""Mapping settings: ``MapConfig``, ``ClusterConfig`` (where block tasks run) and the storage encodings of
probability products.

Kept free of torch and GDAL so the command line can build its options (and their choices) from
here without heavy imports.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from dunemap.errors import ConfigError
from dunemap.mapping.windows import BLEND_MODES
from dunemap.registry import choose

log = logging.getLogger(__name__)

UINT8_FRACTION_SCALE = 254  # fractions in [0, 1] are stored as round(p * 254); 255 is nodata
AUTO_BLOCK_READ_BYTES = 128 * 1024 * 1024  # input bytes of one block (with halo) when block_size is 0


@dataclass(frozen=True)
class FractionEncoding:
    """How a [0, 1] product (confidence, probabilities) is stored."""

    dtype: str
    nodata: float
    scale: float  # stored value * scale = fraction

    def encode(self, p: np.ndarray) -> np.ndarray:
        """Encode float fractions, NaN = nodata."""
        if self.dtype == "float32":
            return p.astype(np.float32, copy=False)
        q = np.rint(np.nan_to_num(p, nan=0.0) * UINT8_FRACTION_SCALE)
        q = np.clip(q, 0, UINT8_FRACTION_SCALE).astype(np.uint8)
        q[np.isnan(p)] = 255
        return q


FRACTION_ENCODINGS: dict[str, FractionEncoding | None] = {
    "none": None,
    "uint8": FractionEncoding("uint8", 255, 1.0 / UINT8_FRACTION_SCALE),
    "float32": FractionEncoding("float32", float("nan"), 1.0),
}


# the inference backends (dunemap.runtime.backends.BACKENDS, which a test holds equal): named here without torch
BACKEND_NAMES = ("auto", "torch", "onnxruntime", "onnxruntime-int8", "openvino", "openvino-bf16", "openvino-int8")

FALLBACK_WINDOW = 512  # window of a checkpoint that records no training tile (a published MADS file)


def default_stride(window: int) -> int:
    """The stride that leaves every pixel at least ``min(64, window / 4)`` px inside a window (docs/quality.md):
    window 128 -> 64, 256 -> 128, 512 -> 384 (the margin stops paying at about 32-64 px)."""
    margin = min(64, window // 4)
    return max(1, window - 2 * margin)


@dataclass
class MapConfig:
    """Settings of a mapping run; the defaults were chosen with ``benchmarks/bench_mapping.py``.

    512-px windows cost the least per pixel with mit_b2 on CPU (768 px: ~+15 %, 1024 px: ~+75 %, from
    stage-1 attention). Stride 384 predicts each pixel ~1.8 times (the seed's 256 stride: ~4 times) with a
    128-px Gaussian-blended overlap: its seam index (``dunemap map --profile``) was below the seed design's
    (2.9 against 3.8), where stride 480's 32-px overlap left visible window edges (8.1); batches of 512-px
    windows gain nothing on CPU, so auto runs them one a stream (2 a call for OpenVINO's 2 streams). Smaller windows
    (a model trained on 128-px tiles) are batched on a CPU up to 256 x 256 pixels per forward pass
    (:data:`dunemap.runtime.engines.CPU_BATCH_PIXELS`): one at a time, the fixed cost of each call (the
    backend's dispatch, the predictor's wrapping, the softmax) outweighed their inference; larger batches
    were no faster and held more memory (BENCHMARKS.md, "Inference backends (issue 30)").
    """

    window: int = 0  # side of the square windows the model sees, pixels; 0 = the checkpoint's training tile
    # (FALLBACK_WINDOW for a checkpoint that records none); the model pads to a multiple of 32
    stride: int = 0  # step between windows, pixels (overlap = window - stride); 0 = default_stride(window)
    # windows per forward pass; 0 = auto: on a CPU enough for 256 x 256 pixels (4 of 128 px, 1 of 256 px or more)
    # per stream of an OpenVINO export (2 streams on 2 threads or more), on a GPU from its free memory
    batch_size: int = 0
    blend: str = "gaussian"  # weight of a window's pixels when blending overlaps: gaussian, cosine or uniform
    block_size: int = 0  # output pixels per block side (multiple of 16); 0 = from the input's bytes per pixel
    confidence: str = "none"  # also write MAP_confidence.tif (max probability): none, uint8 or float32
    probabilities: str = "none"  # also write MAP_probabilities.tif (one band per class): none, uint8 or float32
    applicability: bool = False  # also write MAP_applicability.tif: dissimilarity index and inside/outside mask
    cog_tile: int = 512  # tile side of the output COGs, pixels
    resume: bool = True  # continue a killed run from its journal
    overwrite: bool = False  # replace an existing map (and remove its companions this run does not write)
    allow_no_crs: bool = False  # map an input without a CRS (the products then cannot measure areas)
    prefetch: bool = True  # read the next block in a background thread
    progress: bool = True  # show a progress bar over blocks
    profile: bool = False  # time each stage and measure the seam index of the finished map
    backend: str = "auto"  # what runs the model (BACKEND_NAMES): auto measures the installed ones on the raster
    backend_agreement: float = 0.995  # auto keeps backends whose classes equal fp32 torch's on this share of pixels
    remeasure: bool = False  # auto times every backend again, not reusing what it measured on this machine before

    def validate(self) -> None:
        if self.window and self.window < 32:
            raise ConfigError(f"window {self.window} is too small; use at least 32 pixels")
        if self.stride < 0 or (self.window and self.stride > self.window):
            raise ConfigError(f"stride {self.stride} must be in 1..window ({self.window}), or 0 (from the window)")
        if self.batch_size < 0:
            raise ConfigError(f"batch size {self.batch_size} must be 0 (auto) or positive")
        if self.block_size < 0 or self.block_size % 16:
            raise ConfigError(f"block size {self.block_size} must be 0 (auto) or a positive multiple of 16")
        if self.cog_tile < 128 or self.cog_tile % 16:
            raise ConfigError(f"COG tile {self.cog_tile} must be a multiple of 16, at least 128")
        choose(BLEND_MODES, self.blend, "blend mode")
        choose(dict.fromkeys(BACKEND_NAMES), self.backend, "backend")
        if not 0.0 <= self.backend_agreement <= 1.0:
            raise ConfigError(f"backend agreement {self.backend_agreement} must be a share in 0..1")
        choose(FRACTION_ENCODINGS, self.confidence, "confidence encoding")
        choose(FRACTION_ENCODINGS, self.probabilities, "probabilities encoding")

    def for_model(self, train_tile: int | None) -> MapConfig:
        """This config with its windows resolved for a model trained on ``train_tile``-pixel tiles (None: unknown).

        A window of 0 becomes the training tile (a model sees at mapping time the context it learnt from), or
        FALLBACK_WINDOW when the checkpoint records none; a stride of 0 follows the window (default_stride).
        """
        window = self.window or train_tile or FALLBACK_WINDOW
        if not self.window and train_tile is None:
            log.info("the checkpoint records no training tile size: mapping with %d px windows", window)
        if train_tile and not 0.5 <= window / train_tile <= 2:
            log.warning("window %d px is far from the %d px tiles the model was trained on; maps are best at "
                        "about the training size (--window %d)", window, train_tile, train_tile)
        resolved = replace(self, window=window, stride=self.stride or default_stride(window))
        resolved.validate()
        return resolved

    def resolved_block_size(self, bytes_per_pixel: int) -> int:
        """The block size to use: the configured one, or the largest multiple of 512 within the read budget."""
        if self.block_size:
            return self.block_size
        halo = 2 * (self.window - self.stride)
        side = int((AUTO_BLOCK_READ_BYTES / bytes_per_pixel) ** 0.5) - halo
        return max(512, side // 512 * 512)


@dataclass
class ClusterConfig:
    """Where block tasks run: a LocalCluster that we start and close, or an existing Dask scheduler."""

    workers: int = 0  # start a LocalCluster of this many worker processes, one thread each; 0 = none
    scheduler: str | None = None  # instead, connect to this running scheduler (tcp://HOST:PORT)
    max_in_flight: int = 0  # block tasks submitted and not yet assembled; 0 = 2 per worker thread, at least 4
    allowed_failures: int = 2  # worker deaths a task may be part of before the run fails (clusters we start)
    torch_threads: int | None = None  # torch CPU threads per worker; None = the worker's default (1 under Dask)
    dashboard_address: str = ":8787"  # LocalCluster dashboard (needs bokeh for its pages); ":0" = any free port
    memory_limit: str | int = "auto"  # per LocalCluster worker: "6GiB", bytes, or "auto" (RAM / workers)
    connect_timeout: float = 30.0  # seconds to wait for the scheduler at ``scheduler``

    @property
    def enabled(self) -> bool:
        """Whether blocks run on a Dask cluster (else in this process)."""
        return self.workers > 0 or self.scheduler is not None

    def validate(self) -> None:
        if self.workers < 0:
            raise ConfigError(f"--workers {self.workers} must be 0 (no cluster) or a positive number of processes")
        if self.workers and self.scheduler:
            raise ConfigError(f"give either --workers {self.workers} (start a local cluster) or --scheduler "
                              f"{self.scheduler} (use a running one), not both")
        if self.scheduler is not None and "://" not in self.scheduler:
            raise ConfigError(f"--scheduler {self.scheduler!r} is not a scheduler address; expected e.g. tcp://HOST:8786")
        if self.max_in_flight < 0:
            raise ConfigError(f"--max-in-flight {self.max_in_flight} must be 0 (automatic) or positive")
        if self.allowed_failures < 0:
            raise ConfigError(f"--allowed-failures {self.allowed_failures} must be 0 or more")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ConfigError(f"torch threads per worker {self.torch_threads} must be at least 1")
