"""Streaming sliding-window mapping of a whole embedding raster into a class-map COG.

The work is split into three independent steps so they can also run apart (e.g. blocks as Dask
tasks on workers):

1. :func:`plan_map` (pure geometry, :func:`dunemap.mapping.windows.plan_blocks`): blocks, the
   windows each owns, its extent (core plus halo) and which blocks it contributes to;
2. :func:`dunemap.mapping.predict.predict_block`: read one block's extent, run the model on its
   windows in batches and blend their softmax with smooth weights into a contribution;
3. :class:`dunemap.mapping.assemble.MapAssembler`: take contributions in any order, finish each
   block (classes, confidence, probabilities) once its contributors are in, write it into tiled
   intermediates, and convert them to validated COGs at the end.

:func:`map_raster` chains them in one process, reading the next block (and decoding the next batch of
windows) in background threads
while the model works on the current one, with a journal so that a killed run resumes. Memory is
bounded by the block size (one block of input, one prefetched, one accumulator), never by the
raster size; contributions waiting for a later block wait on disk.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import rasterio
import torch

from dunemap.errors import CheckpointError, InputError
from dunemap.io.formats import raster_driver
from dunemap.io.outputs import check_outputs, locked_outputs
from dunemap.io.progress import progress_bar
from dunemap.knowledge.catalog import class_texts
from dunemap.mapping.assemble import MapAssembler
from dunemap.mapping.config import MapConfig
from dunemap.mapping.predict import (batch_size_for, direct_reads, predict_block_data, prefetched, read_env,
                                     read_layout)
from dunemap.mapping.profile import SeamIndex, StageTimes, seam_index_file
from dunemap.mapping.windows import Block, BlockPlan, plan_blocks
from dunemap.mapping.writer import GridSpec, partial_dir
from dunemap.raster.legend import NODATA_CLASS, ClassLegend
from dunemap.raster.reader import BlockData, EmbeddingReader, as_source, source_files
from dunemap.raster.tags import (BACKEND_PRECISION_TAG, BACKEND_TAG, SCENE_PRIOR_TAG, model_tags, product_paths,
                                 run_tags, source_tags)
from dunemap.raster.zones import ZoneView
from dunemap.runtime import ModelSpec, Predictor, load_predictor
from dunemap.runtime.backends import BackendChoice

log = logging.getLogger(__name__)


@dataclass
class MapResult:
    """What :func:`map_raster` wrote and how the run went."""

    path: Path
    products: dict[str, Path]
    height: int
    width: int
    crs: str | None
    blocks: int
    blocks_resumed: int  # blocks found already predicted in the journal of an earlier run
    windows_predicted: int
    windows_skipped: int
    valid_pixels: int
    seconds: float
    config: dict = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)  # per stage (dunemap.mapping.profile.STAGES)
    seams: SeamIndex | None = None  # measured on the finished map with ``profile``
    backend: dict[str, str] = field(default_factory=dict)  # the backend's tags (BackendChoice.tags) and measures

    @classmethod
    def build(cls, out: Path, plan: MapPlan, products: dict[str, Path], config: MapConfig, started: float,
              resumed: int, predicted: int, skipped: int, times: StageTimes,
              backend: dict[str, str] | None = None) -> MapResult:
        """The result of a finished map (every executor builds it here); with ``config.profile`` the seam
        index of the finished class map is measured after the clock stops."""
        seconds = time.perf_counter() - started
        grid = plan.grid
        seams = seam_index_file(products["classes"], config.window, config.stride) if config.profile else None
        return cls(path=out, products=products, height=grid.height, width=grid.width,
                   crs=None if grid.crs is None else grid.crs.to_string(), blocks=len(plan.blocks),
                   blocks_resumed=resumed, windows_predicted=predicted, windows_skipped=skipped,
                   valid_pixels=count_valid(products["classes"]), seconds=seconds, config=asdict(config),
                   stage_seconds=dict(times.seconds), seams=seams, backend=dict(backend or {}))

    def summary(self) -> str:
        rate = self.height * self.width / max(self.seconds, 1e-9) / 1e4  # km2/s at 10 m pixels
        lines = [f"wrote {self.path} ({self.height}x{self.width} px, {self.valid_pixels} mapped)"]
        lines += [f"wrote {p}" for k, p in self.products.items() if k != "classes"]
        lines.append(
            f"{self.blocks} blocks ({self.blocks_resumed} resumed), {self.windows_predicted} windows predicted, "
            f"{self.windows_skipped} skipped as nodata, {self.seconds:.1f} s ({rate:.2f} km2/s at 10 m)"
        )
        if self.backend:
            lines.append("backend " + ", ".join(f"{k.removeprefix('BACKEND').strip('_').lower() or 'engine'} {v}"
                                                for k, v in self.backend.items()))
        if self.config.get("profile"):
            lines.append(StageTimes(self.stage_seconds).table(self.seconds))
            if self.seams is not None:
                lines.append(self.seams.describe())
        return "\n".join(lines)


@dataclass(frozen=True)
class MapPlan:
    """Everything about a map that does not need the model: its grid, block size and blocks."""

    grid: GridSpec
    block_size: int
    blocks: BlockPlan  # lazy: each block is built when it is asked for




def plan_map(reader: EmbeddingReader, config: MapConfig) -> MapPlan:
    """The block plan of mapping ``reader``'s raster with ``config`` (validated by the caller, at the run's entry)."""
    if reader.crs is None:
        if not config.allow_no_crs:
            raise InputError(f"{reader.path}: the raster has no CRS, so its map could not be measured, vectorised "
                             "or overlaid; give a georeferenced raster or pass --allow-no-crs")
        log.warning("%s: the raster has no CRS; the map will have none either (stats, vectorize and quicklook "
                    "will refuse it)", reader.path)
    block_size = config.resolved_block_size(reader.bands * (1 if reader.is_aef else 4))
    blocks = plan_blocks(reader.height, reader.width, config.window, config.stride, block_size)
    return MapPlan(GridSpec(reader.height, reader.width, reader.crs, reader.transform), block_size, blocks)


def predictor_legend(predictor: Predictor) -> ClassLegend:
    """The legend of a model's maps: its class names and colours, with the catalog's labels."""
    return labelled_legend(predictor.class_names, predictor.colors)


def labelled_legend(names, colors) -> ClassLegend:
    """A map legend of ``names`` and ``colors`` whose labels come from the catalog (:func:`class_texts`)."""
    return ClassLegend.build(list(names), [tuple(c) for c in colors], [label for label, _ in class_texts(list(names))])


def map_fingerprint(sources: Sequence[Path | str], plan: MapPlan, predictor: Predictor | str, config: MapConfig,
                    view: ZoneView | None = None) -> dict:
    """Everything that determines a map's pixels: a resumed run must match it exactly.

    ``predictor`` may be given as its :func:`predictor_fingerprint` (computed where the model runs).
    """
    g = plan.grid
    return {
        "input": [input_fingerprint(s) for s in sources],
        **({} if view is None else {"view": asdict(view)}),
        "grid": [g.height, g.width, str(g.crs), list(g.transform)[:6]],
        "model": predictor if isinstance(predictor, str) else predictor_fingerprint(predictor),
        "config": {k: v for k, v in asdict(config).items()  # the backend chosen is in the model's digest
                   if k not in ("resume", "overwrite", "allow_no_crs", "prefetch", "progress", "cog_tile", "profile",
                                "backend", "backend_agreement", "remeasure")},
        "block_size": plan.block_size,
        "blocks": len(plan.blocks),
    }


def make_assembler(out: str | os.PathLike, plan: MapPlan, legend: ClassLegend, config: MapConfig,
                   fingerprint: dict, precision: str | None = None,
                   applicability_threshold: float | None = None, model: dict[str, str] | None = None,
                   measured: dict[str, str] | None = None) -> MapAssembler:
    """The assembler (single writer) of a planned map; its products' tags record the model (``model``:
    :func:`dunemap.products.provenance.model_tags`), the precision it ran in and the window settings, and
    ``measured`` (the backend's timings and agreement: tags that a resumed run need not match)."""
    if config.applicability and applicability_threshold is None:
        raise CheckpointError("--applicability: this checkpoint has no area of applicability; "
                              "fit one with dunemap calibrate (or train with this version of dunemap)")
    tags = run_tags(config, precision, model)
    # the tags are part of what a resumed run must match, so a finished map's tags describe the run that finished it
    return MapAssembler(out, plan.grid, plan.blocks, plan.block_size, legend, config, {**fingerprint, "tags": tags},
                        {**tags, **(measured or {})}, applicability_threshold)


def applicability_threshold(predictor: Predictor) -> float | None:
    """The predictor's DI threshold, or None when its checkpoint has no area of applicability."""
    aoa = getattr(predictor, "applicability", None)
    return None if aoa is None else float(aoa.threshold)


def predictor_fingerprint(predictor: Predictor) -> str:
    """A digest of everything of the model that changes a pixel: a resumed run must use the same.

    The checkpoint file's SHA-256 as loaded, the weights and text as they run (another ``--text-embeddings``),
    the temperature and area of applicability in use (a recalibrated file, or calibration dropped with
    replaced text), classes, precision and device.
    """
    h = hashlib.sha256()
    h.update(repr((getattr(predictor, "checkpoint_sha256", None), float(getattr(predictor, "temperature", 1.0)))).encode())
    aoa = getattr(predictor, "applicability", None)
    _digest(h, None if aoa is None else aoa.to_dict())
    _digest(h, dict(predictor.model.state_dict()))
    text = getattr(predictor.model, "text_embeddings", None)
    if text is not None:
        h.update(text.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    h.update(repr((predictor.precision, str(getattr(predictor, "device", "cpu")), list(predictor.class_names),
                   [tuple(c) for c in predictor.colors])).encode())
    choice = getattr(predictor, "choice", None)
    if choice is not None:  # an exported backend (dunemap.runtime.backends): its engine and int8 calibration
        h.update(repr((choice.engine, choice.precision, choice.calibration)).encode())
    bias = getattr(predictor, "class_bias", None)
    if bias is not None:  # the class shares of new ground in use
        h.update(bias.numpy().tobytes())
    return h.hexdigest()


def use_ground(predictor: Predictor, reader: EmbeddingReader) -> dict[str, str]:
    """Let ``predictor`` use its checkpoint's class shares of new ground (:class:`dunemap.trust.prior.ScenePrior`)
    when ``reader``'s raster lies on that ground; returns the provenance tag saying so (empty when not)."""
    prior = getattr(predictor, "scene_prior", None)
    if prior is None:
        return {}
    if predictor.use_ground(reader.crs, reader.bounds):
        log.info("%s lies on the ground of the checkpoint's %s: mapped with those class shares", reader.path,
                 prior.describe())
        return {SCENE_PRIOR_TAG: prior.describe()}
    log.info("%s lies outside the ground of the checkpoint's %s: mapped with the training class shares",
             reader.path, prior.describe())
    return {}


def _digest(h, value) -> None:
    """Feed a checkpoint record (nested dicts of tensors and numbers) into the hash ``h``."""
    if isinstance(value, dict):
        for key in sorted(value):
            h.update(f"{key}:".encode())
            _digest(h, value[key])
    elif isinstance(value, torch.Tensor):
        t = value.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{t.dtype}:{tuple(value.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    else:
        h.update(repr(value).encode())


def input_fingerprint(path: Path | str) -> list[dict]:
    """Size and times of every file the pixels of the raster at ``path`` come from (:func:`source_files`: a
    VRT's sources too), so a resumed map notices a changed tile; a GDAL network path by its name alone (the
    archive's files do not change under their name)."""
    if not isinstance(path, Path):
        return [{"path": path}]
    out = []
    for file in source_files(path):
        st = file.stat()
        out.append({"path": str(file), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns})
    return out


def _read_ahead(reader: EmbeddingReader, blocks: Sequence[Block], prefetch: bool, times: StageTimes,
                cache: int) -> Iterator[tuple[Block, BlockData]]:
    """Yield each block with its input, read under ``cache`` bytes of GDAL block cache (:func:`read_layout`; local
    GeoTIFFs past it, :func:`direct_reads`), the next one in a background thread when ``prefetch``."""
    direct = direct_reads(reader)

    def read(block: Block) -> BlockData:
        with times.timed("read"), read_env(cache, direct):
            return reader.read(block.extent)

    return prefetched(read, blocks, prefetch, "dunemap-read")


def resolve_input(input: str | os.PathLike | Sequence[str | os.PathLike],
                  out: Path) -> tuple[list[Path | str], list[Path | str]]:
    """The source rasters of the map at ``out`` and what :class:`EmbeddingReader` opens: absolute paths (workers
    need them) of the one raster or the tiles of a mosaic; GDAL network paths stay as they are."""
    sources = [as_source(input)] if isinstance(input, (str, os.PathLike)) else [as_source(p) for p in input]
    if not sources:
        raise InputError("no input raster given")
    for src in sources:
        if isinstance(src, Path) and src.resolve() == out.resolve():
            raise InputError(f"{out}: the output would overwrite its input")
    return sources, [p.absolute() if isinstance(p, Path) else p for p in sources]


def check_map_outputs(out: str | os.PathLike, inputs: Sequence[str | os.PathLike | None], config: MapConfig) -> None:
    """The output policy for one map: no product may be an input; an existing map needs ``config.overwrite``.

    Only a map that was never finished resumes without it: its work folder ``OUT.partial`` is there and
    the class map is not (a finished map stays until ``--overwrite`` replaces it, whatever the work folder holds).
    """
    out = Path(out)
    partial = partial_dir(out)
    interrupted = config.resume and partial.is_dir() and not partial.is_symlink() and not out.exists()
    check_outputs(product_paths(out).values(), inputs, overwrite=config.overwrite, resume=interrupted)
    raster_driver(out)  # a map is a GeoTIFF: refuse any other extension before any work


def map_raster(
    input: str | os.PathLike | Sequence[str | os.PathLike],
    predictor: Predictor,
    out: str | os.PathLike,
    config: MapConfig | None = None,
) -> MapResult:
    """Map an embedding raster (or a list of tiles, mosaicked through a VRT) to a class-map COG at ``out``.

    Blocks are predicted in row-major order (from a network source too wide for the read cache, in vertical
    bands of block columns, :func:`read_layout`: the same bytes), each finished and written as soon as it is
    predicted into ``OUT.partial/``; a journal there records progress so that a killed run, started again
    with the same arguments, continues where it stopped. The finished COG(s) appear at ``out`` by
    atomic rename. The outputs are claimed first (:func:`check_map_outputs` under their lock), so this
    function is exactly as safe as ``dunemap map``.
    """
    config = (config or MapConfig()).for_model(predictor.train_tile)  # validated, windows resolved
    out = Path(out)
    with locked_outputs([out], product_paths(out).values()):
        sources, _ = resolve_input(input, out)
        check_map_outputs(out, [*sources, getattr(predictor, "path", None)], config)
        return map_claimed(input, predictor, out, config)


def map_claimed(input, predictor: Predictor, out: str | os.PathLike, config: MapConfig,
                view: ZoneView | None = None, backend: BackendChoice | None = None) -> MapResult:
    """:func:`map_raster` for a caller that has resolved ``config`` (:meth:`MapConfig.for_model`) and claimed
    ``out`` under its lock; ``view`` maps one zone of a zone set (:mod:`dunemap.raster.zones`); ``backend``
    is the choice that made ``predictor`` (:mod:`dunemap.mapping.backend`), recorded in the tags."""
    return _map_raster(input, predictor, Path(out), config, time.perf_counter(), view, backend)


def _map_raster(input, predictor: Predictor, out: Path, config: MapConfig, t0: float,
                view: ZoneView | None = None, backend: BackendChoice | None = None) -> MapResult:
    measured = backend_tags(predictor, backend)
    sources, path = resolve_input(input, out)
    with EmbeddingReader(path, bands=predictor.in_channels, view=view) as reader:
        plan = plan_map(reader, config)
        ground = use_ground(predictor, reader)
        assembler = make_assembler(out, plan, predictor_legend(predictor), config,
                                   map_fingerprint(sources, plan, predictor, config, view), predictor.precision,
                                   applicability_threshold(predictor),
                                   {**model_tags(predictor), **ground, **source_tags(sources)}, measured)
        resumed = assembler.open(config.resume)
        cache, band = read_layout(reader, plan.blocks)
        todo = assembler.pending(band)
        predicted = skipped = 0
        times = StageTimes()
        batch_size = batch_size_for(predictor, config)
        windows = plan.blocks.window_count()  # the bar counts windows: a block can hold hundreds
        with progress_bar(total=windows, initial=windows - todo.window_count(), unit="window",
                          desc=out.name, enabled=config.progress) as bar:
            for block, data in _read_ahead(reader, todo, config.prefetch, times, cache):
                contribution = predict_block_data(data, predictor, block, config, batch_size)
                del data
                times.add(contribution.seconds)
                with times.timed("assemble"):
                    assembler.add(contribution)
                predicted += contribution.windows_predicted
                skipped += contribution.windows_skipped
                bar.update(len(block.windows))
        with times.timed("write"):
            products = assembler.finalize()
    result = MapResult.build(out, plan, products, config, t0, resumed, predicted, skipped, times,
                             backend_report(predictor, measured))
    log.debug(result.summary().replace("\n", "; "))
    return result


def backend_tags(predictor: Predictor, backend: BackendChoice | None) -> dict[str, str]:
    """The measurements of the backend a map runs with (``auto``: agreement, seconds per window), for its tags and
    report; they vary from run to run, so a resumed run need not match them (the backend and its precision are
    in :func:`model_tags`)."""
    choice = backend or getattr(predictor, "choice", None)
    tags = {} if choice is None else choice.tags()
    return {k: v for k, v in tags.items() if k not in (BACKEND_TAG, BACKEND_PRECISION_TAG)}


def backend_report(predictor, measured: dict[str, str]) -> dict[str, str]:
    """A map's backend for its result: engine and precision (:func:`model_tags`) and the measurements."""
    tags = model_tags(predictor)
    return {BACKEND_TAG: tags[BACKEND_TAG], BACKEND_PRECISION_TAG: tags[BACKEND_PRECISION_TAG], **measured}


def count_valid(path: Path) -> int:
    """Mapped (not nodata) pixels of a finished class map."""
    with rasterio.open(path) as src:
        total = 0
        for _, window in src.block_windows(1):
            total += int((src.read(1, window=window) != NODATA_CLASS).sum())
    return total


def map_checkpoint(
    input: str | os.PathLike | Sequence[str | os.PathLike],
    model: ModelSpec | str | os.PathLike,
    out: str | os.PathLike,
    config: MapConfig | None = None,
    **options,
) -> MapResult:
    """Load a checkpoint (dunemap or published MADS layout; a ModelSpec, or its weights with ``options``,
    ModelSpec fields) and :func:`map_raster` with it."""
    return map_raster(input, load_predictor(ModelSpec.of(model, **options)), out, config)
