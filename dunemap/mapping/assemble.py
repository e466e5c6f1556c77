"""Map assembly: collect block contributions in any order, finish and write blocks, resume after a kill.

:class:`MapAssembler` is the single writer of a map. Contributions may come from the same process
(:func:`dunemap.mapping.engine.map_raster`) or from workers (Dask tasks running
:func:`dunemap.mapping.predict.predict_block`), in any order. A part destined for a block that cannot
be finished yet is saved in ``OUT.partial/spills/``; a block is finished as soon as all its
contributors are in, always summing their parts in ascending block order, so the bytes of the map
do not depend on the order of arrival. The journal records predicted and written blocks.
"""

from __future__ import annotations

import logging
import shutil
import zipfile
from pathlib import Path

import numpy as np

from dunemap.errors import InputError
from dunemap.io.atomic import atomic_path
from dunemap.io.outputs import work_folder
from dunemap.mapping.config import MapConfig
from dunemap.mapping.predict import Contribution, Part, finish_block, split_contribution
from dunemap.mapping.resume import JOURNAL_NAME, BlockJournal
from dunemap.mapping.windows import BlockPlan, BlockSelection
from dunemap.mapping.writer import GridSpec, PartialMap
from dunemap.raster.geometry import Box
from dunemap.raster.legend import ClassLegend

log = logging.getLogger(__name__)


class MapAssembler:
    """The writer of one map: finishes blocks from contributions and keeps the resume journal."""

    def __init__(
        self,
        out: str | Path,
        grid: GridSpec,
        blocks: BlockPlan,
        block_size: int,
        legend: ClassLegend,
        config: MapConfig,
        fingerprint: dict,
        tags: dict[str, str] | None = None,
        applicability_threshold: float | None = None,
    ) -> None:
        self.blocks = blocks
        self.config = config
        self.partial = PartialMap(out, grid, legend, block_size, config.confidence, config.probabilities, tags,
                                  applicability_threshold if config.applicability else None)
        self.directory = self.partial.directory
        self.spill_dir = self.directory / "spills"
        self.journal = BlockJournal(self.directory / JOURNAL_NAME, fingerprint)

    def open(self, resume: bool = True) -> int:
        """Start a fresh map, or (``resume``) continue a journalled one; returns the blocks already predicted."""
        work_folder(self.directory)  # never a symbolic link: refused before anything is read or written there
        if resume:
            journal = BlockJournal.resume(self.journal.path, self.journal.fingerprint)
            if not journal.empty:
                if self.partial.is_usable():
                    self.journal = journal
                    self._forget_damaged()
                    log.info("resuming %s: %d of %d blocks already predicted",
                             self.partial.out, len(journal.predicted), len(self.pending()) + len(journal.predicted))
                    return len(journal.predicted)
                log.warning("%s: partial output missing or damaged; starting over", self.directory)
        self.journal.clear()
        self.partial.create()
        if self.spill_dir.exists():
            shutil.rmtree(self.spill_dir)
        self.spill_dir.mkdir(parents=True)
        self.journal.save()
        return 0

    def _forget_damaged(self) -> None:
        """Verify the written blocks of a resumed map; a block that cannot be read back is predicted again.

        Its contributors are marked unpredicted, so their windows run again; their parts for blocks
        already written are ignored as usual, and the damaged block is rewritten once all are in.
        """
        written = {i: self.blocks[i].core for i in sorted(self.journal.written)}
        damaged = self.partial.damaged(written)
        for index in damaged:
            self.journal.written.discard(index)
            self.journal.predicted.difference_update(self.blocks[index].contributors)
        lost = self._damaged_spills()
        self.journal.predicted.difference_update(lost)
        if damaged or lost:
            self.journal.save()

    def _damaged_spills(self) -> set[int]:
        """The predicted blocks whose saved part for a block not yet written is missing or unreadable: they are
        predicted again (their parts for other blocks are then saved anew)."""
        lost: set[int] = set()
        for b in self.blocks:
            if b.index in self.journal.written:
                continue
            for s in b.contributors:
                if s in self.journal.predicted and s not in lost and self._read_part(b.index, s) is None:
                    lost.add(s)
        if lost:
            log.warning("%s: %d saved block part(s) missing or damaged; predicting block(s) %s again",
                        self.spill_dir, len(lost), sorted(lost))
        return lost

    def pending(self, band: int = 0) -> BlockSelection:
        """Blocks still to predict, row-major or in vertical bands of ``band`` block columns (blocks that own no
        windows need no prediction); lazy, as the plan."""
        return self.blocks.pending(self.journal.predicted, band)

    def _spill_path(self, target: int, source: int) -> Path:
        return self.spill_dir / f"{target}_{source}.npz"

    def _save_part(self, target: int, part: Part) -> None:
        box = np.array([part.box.row, part.box.col, part.box.height, part.box.width], dtype=np.int64)
        with atomic_path(self._spill_path(target, part.source), suffix=".npz", durable=True) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, box=box, acc=part.acc, wsum=part.wsum, valid=part.valid)

    def _read_part(self, target: int, source: int) -> Part | None:
        """The part ``source`` saved for ``target``, or None when the file is missing or damaged."""
        try:
            return self._load_part(target, source)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            log.debug("%s: unreadable (%s)", self._spill_path(target, source), exc)
            return None

    def _load_part(self, target: int, source: int) -> Part:
        with np.load(self._spill_path(target, source)) as z:
            row, col, height, width = (int(v) for v in z["box"])
            part = Part(source, Box(row, col, height, width), z["acc"], z["wsum"], z["valid"])
        if part.box != self.blocks[target].core.intersection(self.blocks[source].extent) or \
                part.wsum.shape != part.box.shape or part.acc.shape[1:] != part.box.shape:
            raise ValueError(f"box {part.box} or arrays {part.acc.shape} do not fit blocks {source} -> {target}")
        return part

    def add(self, contribution: Contribution) -> tuple[int, ...]:
        """Take one block's contribution; finish and write every block it completes (returned)."""
        index = contribution.source
        if index in self.journal.predicted:
            log.debug("block %d was already predicted; contribution ignored", index)
            return ()
        if contribution.box != self.blocks[index].extent:
            raise InputError(f"contribution of block {index} covers {contribution.box}, not its extent {self.blocks[index].extent}")
        predicted = self.journal.predicted | {index}
        parts = split_contribution(contribution, self.blocks)
        ready = [
            t for t in parts
            if t not in self.journal.written and all(s in predicted for s in self.blocks[t].contributors)
        ]
        for t, part in parts.items():
            if t not in ready and t not in self.journal.written:
                self._save_part(t, part)
        for t in ready:
            block = self.blocks[t]
            inputs = {s: parts[t] if s == index else self._load_part(t, s) for s in block.contributors}
            pred = finish_block(block, inputs, dissimilarity=self.config.applicability)
            self.partial.write_block(block.core, pred.classes, pred.confidence, pred.probabilities, pred.dissimilarity)
        self.journal.record(predicted=index, written=tuple(ready))
        for t in ready:
            for s in self.blocks[t].contributors:
                self._spill_path(t, s).unlink(missing_ok=True)
        return tuple(ready)

    @property
    def complete(self) -> bool:
        return len(self.journal.written) == len(self.blocks)

    def finalize(self) -> dict[str, Path]:
        """Convert the finished intermediates to validated COGs at their final paths."""
        if not self.complete:
            missing = sorted(set(range(len(self.blocks))) - self.journal.written)
            raise InputError(f"{self.partial.out}: {len(missing)} block(s) not finished yet, e.g. {missing[:5]}")
        return self.partial.finalize(self.config.cog_tile)
