"""Pixel geometry of north-up rasters: boxes and the one grid rule for windows and tiles.

Everything is in pixels of a raster's north-up grid and does no I/O. :func:`window_starts` is the
grid every command cuts a raster with: mapping windows (:mod:`dunemap.mapping.windows`) and
training tiles (:mod:`dunemap.data.prepare`) alike. Along an axis, starts are ``0, stride, 2 *
stride, ...`` plus one last start aligned to the axis's end, so every piece is full-size and the
whole axis is covered; an axis shorter than the piece gets one piece at 0 (shortened or padded by
the caller).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dunemap.errors import ConfigError


@dataclass(frozen=True)
class Box:
    """A rectangle of pixels: ``rows [row, row + height)`` and ``cols [col, col + width)``."""

    row: int
    col: int
    height: int
    width: int

    @property
    def row_stop(self) -> int:
        return self.row + self.height

    @property
    def col_stop(self) -> int:
        return self.col + self.width

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    def slices(self) -> tuple[slice, slice]:
        """Index this box in an array whose origin is the raster's pixel (0, 0)."""
        return slice(self.row, self.row_stop), slice(self.col, self.col_stop)

    def relative_to(self, origin: Box) -> Box:
        """This box in the coordinates of an array whose pixel (0, 0) is ``origin``'s corner."""
        return Box(self.row - origin.row, self.col - origin.col, self.height, self.width)

    def intersection(self, other: Box) -> Box | None:
        """The overlap of two boxes, or None when they do not overlap."""
        r0, c0 = max(self.row, other.row), max(self.col, other.col)
        r1, c1 = min(self.row_stop, other.row_stop), min(self.col_stop, other.col_stop)
        if r1 <= r0 or c1 <= c0:
            return None
        return Box(r0, c0, r1 - r0, c1 - c0)


def window_starts(length: int, window: int, stride: int, gaps: bool = False) -> list[int]:
    """Start offsets of windows (or tiles) of ``window`` pixels stepping by ``stride`` along an axis of ``length``.

    Starts are ``0, stride, 2 * stride, ...`` while a window fits, plus one last window aligned to
    the end when the regular grid leaves pixels uncovered. On an axis shorter than the window the
    only window starts at 0 (and is shortened to the axis by :func:`window_extent`). A stride larger
    than the window leaves pixels between windows: refused unless ``gaps`` (sparse training tiles).
    """
    if length < 1 or window < 1 or stride < 1:
        raise ConfigError(f"window geometry needs positive sizes; got length={length}, window={window}, stride={stride}")
    if stride > window and not gaps:
        raise ConfigError(f"stride {stride} exceeds window {window}: pixels between windows would never be predicted")
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] + window < length:
        starts.append(length - window)
    return starts


def window_count(length: int, window: int, stride: int) -> int:
    """Number of windows along an axis: ``1`` if ``length <= window`` else ``ceil((length - window) / stride) + 1``."""
    if length <= window:
        return 1
    return math.ceil((length - window) / stride) + 1


def window_extent(length: int, window: int) -> int:
    """Window size actually used along an axis: the window, or the axis when it is shorter."""
    return min(length, window)
