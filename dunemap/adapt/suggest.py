"""Where to label next: square patches ranked by what a label there is expected to teach the model.

A patch's **uncertainty** is the mean over its pixels of the calibrated probabilities' margin
uncertainty ``1 - (p1 - p2)`` (or their normalised entropy); its **dissimilarity** is the share of its
pixels outside the area of applicability (Meyer & Pebesma 2021 recommend adding training data exactly
there). The ``suggest`` selection ranks patches by ``uncertainty + dissimilarity`` and takes them
greedily, each time dividing a candidate's score by ``1 + k``, where ``k`` counts the patches already
taken whose most frequent predicted class is the candidate's (**diversity**: a rare predicted class
still gets a patch), and keeping ``spacing`` patch sides between patches (spread in space). The
``uncertainty`` selection ranks by uncertainty alone; ``random`` draws valid patches at random (the
baselines of ``benchmarks/bench_adapt.py``).

Candidates lie on a grid of half-patch steps and are never on nodata or over the raster's edge.
Everything is computed from the map's own products (class probabilities and applicability), read in
strips of half-patch rows, so memory is bounded by the raster's width, not its size.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dunemap.errors import ConfigError, InputError
from dunemap.io.formats import file_set, vector_driver, write_vectors
from dunemap.io.outputs import claim_outputs
from dunemap.raster.geometry import Box
from dunemap.raster.legend import ClassLegend, read_legend
from dunemap.raster.tags import product_paths
from dunemap.registry import choose

log = logging.getLogger(__name__)

SELECTIONS = {  # how patches are chosen (--method)
    "suggest": "uncertainty + dissimilarity, spread over space and predicted classes",
    "uncertainty": "uncertainty alone, the highest first",
    "random": "valid patches drawn at random",
}
UNCERTAINTIES = {"margin": "1 - (p1 - p2)", "entropy": "entropy of the probabilities / log(classes)"}
PATCH_LAYER = "patches"


@dataclass
class SuggestConfig:
    """Options of :func:`suggest_patches`; sizes are in pixels."""

    n: int = 10  # patches to propose
    size: int = 64  # side of a square patch
    method: str = "suggest"  # suggest | uncertainty | random (SELECTIONS)
    uncertainty: str = "margin"  # margin | entropy (UNCERTAINTIES)
    spacing: float = 1.0  # suggest: patch sides kept free between two patches
    seed: int = 0  # random: the draw
    overwrite: bool = False  # replace an existing --out

    def validate(self) -> None:
        if self.n < 1:
            raise ConfigError(f"--n {self.n} must be at least 1 patch")
        if self.size < 2 or self.size % 2:
            raise ConfigError(f"--size {self.size} must be an even number of pixels, at least 2")
        if self.spacing < 0:
            raise ConfigError(f"--spacing {self.spacing} must not be negative")
        choose(SELECTIONS, self.method, "selection method")
        choose(UNCERTAINTIES, self.uncertainty, "uncertainty")


@dataclass
class Suggestion:
    """One proposed patch: its rank (1 = label first), pixel box, score and the score's parts."""

    rank: int
    box: Box
    score: float
    uncertainty: float  # mean over the patch, 0..1
    dissimilarity: float  # share of the patch outside the area of applicability (0 without one)
    diversity: float  # the factor the class mix of earlier patches applied to the score (1 = none)
    mix: dict[str, float] = field(default_factory=dict)  # predicted class -> share of the patch's pixels

    @property
    def dominant(self) -> str:
        return max(self.mix, key=self.mix.get) if self.mix else ""


@dataclass
class CellStats:
    """Sums over the half-patch cells of a raster, the building blocks of every candidate patch."""

    cell: int  # cell side, pixels (half a patch)
    valid: np.ndarray  # (R, C) pixels with data
    uncertainty: np.ndarray  # (R, C) sum of the pixels' uncertainty
    outside: np.ndarray  # (R, C) pixels outside the area of applicability
    classes: np.ndarray  # (R, C, K) pixels per predicted class

    def patches(self) -> tuple[np.ndarray, ...]:
        """Per candidate patch (2 x 2 cells, at every cell): valid, uncertainty, outside and class sums."""
        def two_by_two(a: np.ndarray) -> np.ndarray:
            return a[:-1, :-1] + a[1:, :-1] + a[:-1, 1:] + a[1:, 1:]
        return tuple(two_by_two(a) for a in (self.valid, self.uncertainty, self.outside, self.classes))


def _uncertainty(p: np.ndarray, kind: str) -> np.ndarray:
    """(h, w) uncertainty of (K, h, w) probabilities: margin ``1 - (p1 - p2)`` or normalised entropy."""
    if kind == "margin":
        top2 = np.partition(p, p.shape[0] - 2, axis=0)[-2:]
        return 1.0 - (top2[1] - top2[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=0)
    return ent / math.log(p.shape[0])


def cell_stats(probabilities: str | os.PathLike, applicability: str | os.PathLike | None, size: int,
               uncertainty: str = "margin") -> tuple[CellStats, ClassLegend, "object", "object"]:
    """Read a map's probabilities (and applicability) companions in strips and sum them over half-patch cells.

    Returns the cell sums, the classes' legend, and the map's CRS and transform.
    """
    import rasterio
    from rasterio.windows import Window

    cell = size // 2
    with rasterio.open(probabilities) as src:
        legend = read_legend(src)
        if legend is None or len(legend.names) != src.count:
            raise InputError(f"{probabilities}: not a dunemap probabilities product (one band per class, with its "
                             "legend); give MAP_probabilities.tif from 'dunemap map --probabilities'")
        crs, transform = src.crs, src.transform
        rows, cols, k = src.height // cell, src.width // cell, src.count
        scale, nodata = src.scales[0], src.nodata
        aoa = rasterio.open(applicability) if applicability is not None else None
        try:
            if aoa is not None and (aoa.height, aoa.width, aoa.transform) != (src.height, src.width, transform):
                raise InputError(f"{applicability}: not on the grid of {probabilities}")
            stats = CellStats(cell, np.zeros((rows, cols)), np.zeros((rows, cols)), np.zeros((rows, cols)),
                              np.zeros((rows, cols, k)))
            width = cols * cell
            for i in range(rows):
                window = Window(0, i * cell, width, cell)
                raw = src.read(window=window)
                valid = ~(np.isnan(raw) if raw.dtype.kind == "f" else raw == nodata).any(axis=0)
                p = raw.astype(np.float64) * (scale if raw.dtype.kind != "f" else 1.0)
                p = np.where(valid, p, 1.0 / k)
                u = np.where(valid, _uncertainty(p, uncertainty), 0.0)
                outside = np.zeros(valid.shape)
                if aoa is not None:
                    mask = aoa.read(2, window=window)
                    outside = (valid & (mask == 0)).astype(np.float64)
                top = np.where(valid, p.argmax(axis=0), k)
                # (cell, cols, cell) views: sum each cell's pixels
                stats.valid[i] = valid.reshape(cell, cols, cell).sum(axis=(0, 2))
                stats.uncertainty[i] = u.reshape(cell, cols, cell).sum(axis=(0, 2))
                stats.outside[i] = outside.reshape(cell, cols, cell).sum(axis=(0, 2))
                for c in range(k):
                    stats.classes[i, :, c] = (top == c).reshape(cell, cols, cell).sum(axis=(0, 2))
        finally:
            if aoa is not None:
                aoa.close()
    return stats, legend, crs, transform


def select_patches(stats: CellStats, names: list[str], config: SuggestConfig) -> list[Suggestion]:
    """Choose ``config.n`` non-overlapping, fully valid patches by ``config.method`` (see the module's docstring)."""
    config.validate()
    cell, size = stats.cell, 2 * stats.cell
    valid, unc, outside, classes = stats.patches()
    full = valid == size * size  # never a patch touching nodata (or the raster's edge: cells are whole)
    if not full.any():
        raise InputError(f"no {size} x {size} px patch of the map is free of nodata; use a smaller --size")
    u = np.where(full, unc / (size * size), -np.inf)
    d = np.where(full, outside / (size * size), 0.0)
    dominant = classes.argmax(axis=2)
    base = u + d if config.method == "suggest" else u
    if config.method == "random":
        base = np.where(full, np.random.default_rng(config.seed).random(full.shape), -np.inf)
    gap = int(round(config.spacing * size)) if config.method == "suggest" else 0
    taken = np.zeros_like(full)  # candidates no longer allowed (overlap or too close)
    counts = np.zeros(len(names), dtype=np.int64)
    chosen: list[Suggestion] = []
    reach = math.ceil((size + gap) / cell) - 1  # candidate offsets (in cells) whose patches would be too close
    while len(chosen) < config.n:
        factor = 1.0 / (1.0 + counts[dominant]) if config.method == "suggest" else np.ones(full.shape)
        score = np.where(full & ~taken, base * factor if config.method != "random" else base, -np.inf)
        flat = int(np.argmax(score))
        if not np.isfinite(score.flat[flat]):
            break
        i, j = np.unravel_index(flat, score.shape)
        taken[max(i - reach, 0): i + reach + 1, max(j - reach, 0): j + reach + 1] = True
        counts[dominant[i, j]] += 1
        mix = {names[c]: float(classes[i, j, c] / (size * size)) for c in np.argsort(-classes[i, j])
               if classes[i, j, c] > 0}
        chosen.append(Suggestion(len(chosen) + 1, Box(int(i) * cell, int(j) * cell, size, size),
                                 float(score[i, j]), float(u[i, j]), float(d[i, j]),
                                 float(factor[i, j]) if config.method == "suggest" else 1.0, mix))
    if len(chosen) < config.n:
        log.warning("only %d patches of %d px fit the valid part of the map (asked for %d)", len(chosen), size,
                    config.n)
    return chosen


def _mix_text(mix: dict[str, float]) -> str:
    return ", ".join(f"{name} {share:.0%}" for name, share in mix.items())


def patches_qml() -> str:
    """A QGIS style for the patches: outlines only, each labelled with its rank."""
    return (
        '<!DOCTYPE qgis><qgis version="3.22" styleCategories="Symbology|Labeling">'
        '<renderer-v2 type="singleSymbol"><symbols><symbol type="fill" name="0" alpha="1"><layer class="SimpleFill">'
        '<Option type="Map"><Option type="QString" name="style" value="no"/>'
        '<Option type="QString" name="outline_color" value="255,0,255,255"/>'
        '<Option type="QString" name="outline_width" value="0.8"/></Option></layer></symbol></symbols>'
        '</renderer-v2><labeling type="simple"><settings><text-style fieldName="rank" fontSize="12" '
        'textColor="255,0,255,255"/><placement placement="1"/></settings></labeling>'
        '<layerGeometryType>2</layerGeometryType></qgis>')


def write_patches(suggestions: list[Suggestion], out: str | os.PathLike, crs, transform) -> Path:
    """Write the patches as polygons (rank, score, its parts, dominant class and class mix) in the map's CRS."""
    import shapely

    polys = []
    for s in suggestions:
        x0, y0 = transform @ (s.box.col, s.box.row)
        x1, y1 = transform @ (s.box.col_stop, s.box.row_stop)
        polys.append(shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
    fields = {
        "rank": np.array([s.rank for s in suggestions], np.int32),
        "score": np.array([s.score for s in suggestions]),
        "uncertainty": np.array([s.uncertainty for s in suggestions]),
        "dissimilarity": np.array([s.dissimilarity for s in suggestions]),
        "diversity": np.array([s.diversity for s in suggestions]),
        "dominant": np.array([s.dominant for s in suggestions], dtype=object),
        "class_mix": np.array([_mix_text(s.mix) for s in suggestions], dtype=object),
    }
    return write_vectors(out, shapely.to_wkb(polys), list(fields.values()), list(fields), layer=PATCH_LAYER,
                         geometry_type="Polygon", crs=crs.to_wkt() if crs is not None else None,
                         style_qml=patches_qml())


def suggest_patches(
    embedding: str | os.PathLike | None,
    out: str | os.PathLike,
    config: SuggestConfig | None = None,
    predictor=None,
    map_config=None,
    probabilities: str | os.PathLike | None = None,
    applicability: str | os.PathLike | None = None,
) -> list[Suggestion]:
    """``dunemap suggest``: propose ``config.n`` patches of ``embedding`` to label, written to ``out``.

    With ``probabilities`` (and, if the model has one, ``applicability``): the companions of a map already
    made, read as they are. Otherwise ``embedding`` is mapped first with ``predictor``
    (:func:`dunemap.mapping.engine.map_raster` with ``map_config``, probabilities and applicability on) into a
    work folder beside ``out`` that is removed afterwards. ``out`` is claimed first (never over an input;
    replaced only with ``config.overwrite``).
    """
    import tempfile

    config = config or SuggestConfig()
    config.validate()
    out = Path(out)
    vector_driver(out)  # an unknown extension is refused before any work
    inputs = [embedding, probabilities, applicability, getattr(predictor, "path", None)]
    with claim_outputs(file_set(out), inputs, overwrite=config.overwrite):
        if probabilities is not None:
            stats, legend, crs, transform = cell_stats(probabilities, applicability, config.size, config.uncertainty)
        else:
            if predictor is None or embedding is None:
                raise ConfigError("give the embedding raster and --weights, or a map's --probabilities")
            from dataclasses import replace

            # deferred: mapping loads torch; patches from a map's companions need none
            from dunemap.mapping.config import MapConfig
            from dunemap.mapping.engine import map_raster

            has_aoa = getattr(predictor, "applicability", None) is not None
            mapping = replace(map_config or MapConfig(), probabilities="float32", applicability=has_aoa,
                              confidence="none", overwrite=False, resume=False)
            with tempfile.TemporaryDirectory(prefix=".suggest-", dir=out.parent) as work:
                mapped = Path(work) / "map.tif"
                map_raster(embedding, predictor, mapped, mapping)
                paths = product_paths(mapped)
                stats, legend, crs, transform = cell_stats(paths["probabilities"],
                                                           paths["applicability"] if has_aoa else None,
                                                           config.size, config.uncertainty)
        suggestions = select_patches(stats, list(legend.names), config)
        write_patches(suggestions, out, crs, transform)
    return suggestions
