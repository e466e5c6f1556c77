"""Spatial-block train/val/test splitting of map tiles: whole blocks of adjacent tiles go to one split.

Tiles are axis-aligned boxes ``(minx, miny, maxx, maxy)`` in one map coordinate system. Each tile
belongs to the square block of side ``block_extent`` (map units) holding its centre; blocks, not
tiles, are shuffled with a fixed seed and dealt to the splits so that each split's tile count
approaches its fraction. Tiles of different splits that would still share pixels (overlapping
strides, tiles shifted to a raster's edge, overlapping scenes) or lie within ``gap`` map units of
each other are resolved by dropping the tile of the lower-priority split (train before val before
test), so kept tiles of different splits never overlap. Everything here is pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dunemap.errors import ConfigError, InputError

SPLITS: tuple[str, str, str] = ("train", "val", "test")
SPLIT_MODES: dict[str, str] = {
    "block": "spatial blocks of tiles are dealt to train/val/test; every scene may feed every split",
    "scene": "whole scenes are held out for test (new-scene scores); the other scenes are split by blocks, "
             "so test also holds blocks of training scenes (in-scene scores)",
}
"""How a dataset is split; a CLI's ``--split-by`` choices are these keys."""
_PRIORITY = {name: i for i, name in enumerate(SPLITS)}  # a conflict drops the tile whose split ranks lower

BlockKey = tuple[int, int]


@dataclass(frozen=True)
class SplitResult:
    """Per-tile outcome of :func:`split_tiles`, aligned with the input boxes."""

    splits: list[str | None]  # split name per tile; None when dropped to keep splits apart
    blocks: list[BlockKey]  # block (column, row) index of each tile
    block_splits: dict[BlockKey, str]  # split dealt to each block

    @property
    def num_dropped(self) -> int:
        return sum(s is None for s in self.splits)

    def counts(self) -> dict[str, int]:
        """Kept tiles per split, every split listed."""
        return {name: sum(s == name for s in self.splits) for name in SPLITS}


def parse_fractions(text: str | tuple[float, ...] | list[float]) -> tuple[float, float, float]:
    """Parse ``"0.7,0.15,0.15"`` (or a 3-sequence) into train/val/test fractions normalised to sum 1."""
    if isinstance(text, str):
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            raise ConfigError(f"split {text!r} is not three comma-separated numbers like 0.7,0.15,0.15") from None
    else:
        values = [float(v) for v in text]
    if len(values) != 3 or any(not np.isfinite(v) or v < 0 for v in values) or values[0] <= 0:
        raise ConfigError(f"split {text!r}: expected three non-negative fractions train,val,test "
                          "with train > 0, like 0.7,0.15,0.15")
    total = sum(values)
    if abs(total - 1.0) > 1e-3:
        raise ConfigError(f"split {text!r}: fractions sum to {total:g}; expected 1")
    return values[0] / total, values[1] / total, values[2] / total


def block_keys(boxes: np.ndarray, block_extent: float) -> list[BlockKey]:
    """The block (column, row) of each box: the square of side ``block_extent`` holding its centre."""
    if not block_extent > 0:
        raise ConfigError(f"block extent {block_extent!r} must be positive (map units)")
    boxes = _as_boxes(boxes)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2.0
    cy = (boxes[:, 1] + boxes[:, 3]) / 2.0
    bx = np.floor(cx / block_extent).astype(np.int64)
    by = np.floor(cy / block_extent).astype(np.int64)
    return [(int(x), int(y)) for x, y in zip(bx, by)]


def assign_blocks(
    block_sizes: dict[BlockKey, int], fractions: tuple[float, float, float], seed: int
) -> dict[BlockKey, str]:
    """Deal blocks to splits: shuffle them with ``seed``, then give each to the split furthest below its target.

    A split's target is its fraction of all tiles; splits with fraction 0 get nothing. The result
    depends only on the block keys, their sizes, the fractions and the seed.
    """
    keys = sorted(block_sizes)
    order = np.random.default_rng(seed).permutation(len(keys))
    total = float(sum(block_sizes.values()))
    targets = [f * total for f in fractions]
    counts = [0.0, 0.0, 0.0]
    active = [i for i, f in enumerate(fractions) if f > 0]
    out: dict[BlockKey, str] = {}
    for k in order:
        key = keys[int(k)]
        best = max(active, key=lambda i: (targets[i] - counts[i], -i))
        out[key] = SPLITS[best]
        counts[best] += block_sizes[key]
    return out


def conflicting_pairs(boxes: np.ndarray, gap: float = 0.0, tol: float = 0.0) -> np.ndarray:
    """Index pairs ``(i, j)``, ``i < j``, of boxes closer than ``gap``: their interiors overlap once grown by ``gap``.

    Boxes that only touch along an edge do not conflict when ``gap == 0``; ``tol`` (map units, e.g.
    half a pixel) absorbs floating-point noise in coordinates. Returns an (M, 2) int array.
    """
    boxes = _as_boxes(boxes)
    n = len(boxes)
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    margin = gap - tol
    # Sweep along x: after sorting by minx, box i can only meet boxes j whose minx < maxx_i + margin.
    order = np.argsort(boxes[:, 0], kind="stable")
    b = boxes[order]
    ends = np.searchsorted(b[:, 0], b[:, 2] + margin, side="left")
    pairs: list[np.ndarray] = []
    for a in range(n):
        cand = np.arange(a + 1, ends[a])
        if cand.size == 0:
            continue
        c = b[cand]
        hit = (
            (c[:, 0] < b[a, 2] + margin) & (b[a, 0] < c[:, 2] + margin)
            & (c[:, 1] < b[a, 3] + margin) & (b[a, 1] < c[:, 3] + margin)
        )
        if hit.any():
            i = np.full(int(hit.sum()), order[a])
            j = order[cand[hit]]
            pairs.append(np.stack([np.minimum(i, j), np.maximum(i, j)], axis=1))
    if not pairs:
        return np.zeros((0, 2), dtype=np.int64)
    return np.concatenate(pairs).astype(np.int64)


def split_tiles(
    boxes: np.ndarray,
    fractions: tuple[float, float, float],
    block_extent: float,
    seed: int = 0,
    gap: float = 0.0,
    tol: float = 0.0,
) -> SplitResult:
    """Split tiles by spatial blocks and drop the lower-priority tile of every cross-split pair closer than ``gap``.

    ``boxes`` is an (N, 4) array of ``minx, miny, maxx, maxy`` in one map CRS; ``block_extent``
    and ``gap`` are in its units. After dropping, no two kept tiles of different splits share a
    block, overlap, or come within ``gap`` of each other.
    """
    boxes = _as_boxes(boxes)
    keys = block_keys(boxes, block_extent)
    sizes: dict[BlockKey, int] = {}
    for k in keys:
        sizes[k] = sizes.get(k, 0) + 1
    block_splits = assign_blocks(sizes, fractions, seed)
    splits: list[str | None] = [block_splits[k] for k in keys]
    return SplitResult(splits=drop_conflicts(boxes, splits, gap, tol), blocks=keys, block_splits=block_splits)


def drop_conflicts(boxes: np.ndarray, splits: list[str | None], gap: float = 0.0, tol: float = 0.0) -> list[str | None]:
    """``splits`` with the lower-priority tile of every cross-split pair closer than ``gap`` set to None."""
    splits = list(splits)
    for i, j in conflicting_pairs(boxes, gap=gap, tol=tol):
        si, sj = splits[i], splits[j]
        if si is None or sj is None or si == sj:
            continue
        # Drop the lower-priority side; a tile already dropped no longer conflicts with anything.
        if _PRIORITY[si] < _PRIORITY[sj]:
            splits[i] = None
        else:
            splits[j] = None
    return splits


def split_scenes(
    boxes: np.ndarray,
    scenes: list[str],
    groups: list[str],
    fractions: tuple[float, float, float],
    block_extent: float,
    seed: int = 0,
    gap: float = 0.0,
    tol: float = 0.0,
) -> list[str | None]:
    """Hold whole scenes out for val/test (:func:`holdout_scenes`), split the rest by blocks, keep splits apart.

    ``scenes[i]`` and ``groups[i]`` name tile ``i``'s scene (e.g. its source raster) and group (its
    region). The other scenes' tiles are dealt by :func:`split_tiles` with :func:`in_scene_fractions`,
    and finally every cross-split pair closer than ``gap`` loses its lower-priority tile. Scenes of the same
    ground lose each other's tiles that way: when no training tile is left, an InputError names them
    (:func:`overlapping_scenes`), since no block or tile size can help.
    """
    boxes = _as_boxes(boxes)
    members: dict[str, set[str]] = {}
    for scene, group in zip(scenes, groups):
        members.setdefault(group, set()).add(scene)
    held = holdout_scenes({g: sorted(v) for g, v in members.items()}, fractions, seed)
    whole = [held.get((g, s)) for s, g in zip(scenes, groups)]
    rest = [i for i, w in enumerate(whole) if w is None]
    splits: list[str | None] = list(whole)
    if rest:
        inner = split_tiles(boxes[rest], in_scene_fractions(fractions) if held else fractions, block_extent, seed,
                            gap, tol)
        for i, split in zip(rest, inner.splits):
            splits[i] = split
    splits = drop_conflicts(boxes, splits, gap, tol)
    if "train" not in splits and (pairs := overlapping_scenes(boxes, scenes)):
        named = "; ".join(f"{Path(a).name} and {Path(b).name}: {share:.0%}" for a, b, share in pairs[:3])
        raise InputError(f"--split-by scene left no training tile: the images cover the same ground (share of the "
                         f"smaller image's tiles under the other: {named}), so holding one out for val/test removes "
                         "the tiles of the others under it; give images of different ground, or use --split-by block")
    return splits


def overlapping_scenes(boxes: np.ndarray, scenes: list[str]) -> list[tuple[str, str, float]]:
    """Pairs of scenes whose tiles cover the same ground: (scene, scene, share of the smaller scene's tile area
    inside the other's extent), largest share first. Held out whole, such a scene takes its twin's tiles with it."""
    boxes = _as_boxes(boxes)
    names = sorted(set(scenes))
    index = np.array([names.index(s) for s in scenes])
    pairs = []
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            own = [boxes[index == k] for k in (a, b)]
            extents = [(t[:, 0].min(), t[:, 1].min(), t[:, 2].max(), t[:, 3].max()) for t in own]
            shares = []
            for tiles, (x0, y0, x1, y1) in ((own[0], extents[1]), (own[1], extents[0])):
                w = np.clip(np.minimum(tiles[:, 2], x1) - np.maximum(tiles[:, 0], x0), 0, None)
                h = np.clip(np.minimum(tiles[:, 3], y1) - np.maximum(tiles[:, 1], y0), 0, None)
                shares.append(float((w * h).sum() / ((tiles[:, 2] - tiles[:, 0]) * (tiles[:, 3] - tiles[:, 1])).sum()))
            if max(shares) > 0:
                pairs.append((names[a], names[b], max(shares)))
    return sorted(pairs, key=lambda p: -p[2])


def _as_boxes(boxes: np.ndarray) -> np.ndarray:
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ConfigError(f"tile boxes have shape {arr.shape}; expected (N, 4) minx, miny, maxx, maxy")
    return arr


def holdout_scenes(scenes: dict[str, list[str]], fractions: tuple[float, float, float],
                   seed: int) -> dict[tuple[str, str], str]:
    """Whole scenes held out for val and test: about each split's fraction of all scenes (at least one if positive).

    ``scenes`` maps a group (a region) to its scene names. Groups take turns in a seeded order and
    each gives one random scene per turn, so held-out scenes spread over the groups; a group never
    gives its last scene, so every group keeps scenes for training. Returns ``{(group, scene): split}``;
    scenes not listed stay available for training (and for in-scene blocks of every split).
    """
    total = sum(len(v) for v in scenes.values())
    rng = np.random.default_rng(seed)
    pools = {g: [names[i] for i in rng.permutation(len(names))] for g, names in sorted(scenes.items())}
    order = [sorted(pools)[int(i)] for i in rng.permutation(len(pools))]
    wants = [(name, max(1, int(round(f * total)))) for name, f in zip(SPLITS[1:], fractions[1:]) if f > 0]
    chosen: dict[tuple[str, str], str] = {}
    turn: list[str] = []
    for split, want in wants:
        for _ in range(want):
            if not turn:
                turn = [g for g in order if len(pools[g]) > 1]
                if not turn:
                    return chosen
            g = turn.pop(0)
            chosen[(g, pools[g].pop())] = split
    return chosen


def in_scene_fractions(fractions: tuple[float, float, float]) -> tuple[float, float, float]:
    """Block fractions for the scenes left after :func:`holdout_scenes`: half of val's and test's shares.

    Whole held-out scenes already fill val and test with new ground; the in-scene blocks only need
    to be enough for the in-scene score, and the rest of those scenes trains.
    """
    t, v, e = fractions
    return t + (v + e) / 2.0, v / 2.0, e / 2.0

