"""Where a map's time goes, and whether its window edges show: per-stage seconds and the seam index.

Stages (``dunemap map --profile``): ``read`` (GDAL read of a block's extent), ``decode`` (int8 codes
to the model's input), ``model`` (forward passes and the probabilities' softmax), ``blend`` (weighted accumulation),
``assemble`` (finishing blocks and writing them to the intermediates) and ``write`` (COG conversion
with overviews). Reading and decoding run in background threads beside the model, so the stages
can add up to more than the wall time.

The seam index measures straight lines along window edges. A model's prediction depends on where
its window sits, so the class can jump where one window's influence gives way to the next one's.
Between every two adjacent rows (and columns) of the map we count how often the class changes; the
index is that rate on the lines where a window starts or ends, divided by the rate on all other
lines. 1 means the window edges are invisible; the higher, the more visible.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dunemap.raster.geometry import window_extent, window_starts
from dunemap.raster.legend import NODATA_CLASS

STAGES = ("read", "decode", "model", "blend", "assemble", "write")
SEAM_STRIP_ROWS = 1024  # rows of the class map held at once while measuring seams


@dataclass
class StageTimes:
    """Seconds spent per stage (summed over blocks, threads and workers)."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - t0

    def add(self, other: StageTimes | dict[str, float]) -> None:
        for stage, s in (other.seconds if isinstance(other, StageTimes) else other).items():
            self.seconds[stage] = self.seconds.get(stage, 0.0) + s

    def share(self, wall: float, *stages: str) -> float:
        """The seconds of ``stages`` together as a percentage of ``wall``."""
        return sum(self.seconds.get(stage, 0.0) for stage in stages) / max(wall, 1e-9) * 100

    def table(self, wall: float) -> str:
        """One line per stage: seconds and share of the wall time; then the share of read and decode together
        (the input path: beside the model, they are the time a faster CPU path could still win back)."""
        lines = [f"{'stage':<10}{'seconds':>9}{'of wall':>9}"]
        for stage in STAGES:
            lines.append(f"{stage:<10}{self.seconds.get(stage, 0.0):9.2f}{self.share(wall, stage):8.1f}%")
        lines.append(f"{'wall':<10}{wall:9.2f}{100.0:8.1f}%")
        lines.append(f"read + decode: {self.share(wall, 'read', 'decode'):.1f}% of wall "
                     "(in background threads beside the model)")
        return "\n".join(lines)


@dataclass(frozen=True)
class SeamIndex:
    """Class-change rates between adjacent rows/columns on window edges and elsewhere."""

    edge_rate: float  # share of adjacent valid pixel pairs across a window edge whose classes differ
    other_rate: float  # the same across every other line
    edge_pairs: int
    other_pairs: int

    @property
    def index(self) -> float:
        """``edge_rate / other_rate`` (NaN without pairs elsewhere or without any change elsewhere)."""
        return self.edge_rate / self.other_rate if self.other_rate > 0 else float("nan")

    def describe(self) -> str:
        return (f"seam index {self.index:.2f} (class changes across window edges {self.edge_rate * 100:.2f} %, "
                f"elsewhere {self.other_rate * 100:.2f} %)")


def edge_lines(length: int, window: int, stride: int) -> np.ndarray:
    """(length,) bool: True at ``p`` where the line between pixels ``p - 1`` and ``p`` is a window edge
    (a window starts at ``p > 0`` or ends at ``p < length``) of the mapping grid of :func:`window_starts`."""
    edges = np.zeros(length, dtype=bool)
    size = window_extent(length, window)
    for s in window_starts(length, window, stride):
        if s > 0:
            edges[s] = True
        if s + size < length:
            edges[s + size] = True
    return edges


class SeamCounter:
    """Accumulates class changes across window edges and elsewhere, strip by strip of a class map."""

    def __init__(self, height: int, width: int, window: int, stride: int) -> None:
        self.row_edges = edge_lines(height, window, stride)
        self.col_edges = edge_lines(width, window, stride)
        self.counts = np.zeros((2, 2), dtype=np.int64)  # [edge, other] x [changes, pairs]

    def _pairs(self, a: np.ndarray, b: np.ndarray, edge: np.ndarray) -> None:
        """Pixel pairs ``a`` / ``b`` (same shape) across lines, ``edge`` broadcastable to them."""
        both = (a != NODATA_CLASS) & (b != NODATA_CLASS)
        change = both & (a != b)
        edge = np.broadcast_to(edge, both.shape)
        self.counts[0] += int(change[edge].sum()), int(both[edge].sum())
        self.counts[1] += int(change[~edge].sum()), int(both[~edge].sum())

    def add_strip(self, row0: int, strip: np.ndarray, previous_row: np.ndarray | None) -> None:
        """Rows ``row0 ..`` of the class map, and the row just above them (None at the top)."""
        self._pairs(strip[:, :-1], strip[:, 1:], self.col_edges[1:][None, :])
        if previous_row is not None:
            strip = np.concatenate([previous_row[None], strip])
            row0 -= 1
        rows = self.row_edges[row0 + 1 : row0 + strip.shape[0]][:, None]
        self._pairs(strip[:-1], strip[1:], rows)

    def result(self) -> SeamIndex:
        (ec, ep), (oc, op) = self.counts
        return SeamIndex(ec / max(ep, 1), oc / max(op, 1), int(ep), int(op))


def seam_index(classes: np.ndarray, window: int, stride: int) -> SeamIndex:
    """The seam index of an (H, W) uint8 class map (255 = nodata) mapped with ``window`` / ``stride``."""
    counter = SeamCounter(*classes.shape, window, stride)
    counter.add_strip(0, classes, None)
    return counter.result()


def seam_index_file(path: str | Path, window: int, stride: int) -> SeamIndex:
    """:func:`seam_index` of a class-map GeoTIFF, read in strips of :data:`SEAM_STRIP_ROWS` rows."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(path) as src:
        counter = SeamCounter(src.height, src.width, window, stride)
        previous = None
        for r0 in range(0, src.height, SEAM_STRIP_ROWS):
            strip = src.read(1, window=Window(0, r0, src.width, min(SEAM_STRIP_ROWS, src.height - r0)))
            counter.add_strip(r0, strip, previous)
            previous = strip[-1].copy()
    return counter.result()
