"""The completed-block journal that lets a killed mapping run restart where it stopped.

The journal is a small JSON file beside the partial output: a fingerprint of everything that
determines the map (input file, grid, model, window settings), the blocks already *predicted*
(their contributions to other blocks are saved beside it) and the blocks already *written* (their
pixels are in the intermediate GeoTIFFs). It is rewritten atomically and fsync'ed after every
block, always after the files it vouches for are on disk. A journal whose fingerprint differs from
the current run is ignored (the run starts over).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from dunemap.io.atomic import atomic_path

log = logging.getLogger(__name__)

JOURNAL_NAME = "journal.json"
JOURNAL_VERSION = 2


class BlockJournal:
    """Predicted and written block indices of one mapping run, persisted after each block."""

    def __init__(self, path: str | os.PathLike, fingerprint: dict[str, Any]) -> None:
        self.path = Path(path)
        self.fingerprint = json.loads(json.dumps(fingerprint))  # normalise tuples etc. to JSON types
        self.predicted: set[int] = set()
        self.written: set[int] = set()

    @classmethod
    def resume(cls, path: str | os.PathLike, fingerprint: dict[str, Any]) -> BlockJournal:
        """Load the journal at ``path`` if it belongs to this run; otherwise an empty one."""
        journal = cls(path, fingerprint)
        if not journal.path.exists():
            return journal
        try:
            saved = json.loads(journal.path.read_text())
            same = saved.get("version") == JOURNAL_VERSION and saved.get("fingerprint") == journal.fingerprint
            predicted = {int(i) for i in saved.get("predicted", [])}
            written = {int(i) for i in saved.get("written", [])}
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("%s: unreadable journal (%s); starting over", journal.path, exc)
            return journal
        if not same:
            log.warning("%s: journal is from a different run (input, model or settings changed); starting over", journal.path)
            return journal
        journal.predicted, journal.written = predicted, written
        return journal

    @property
    def empty(self) -> bool:
        return not self.predicted and not self.written

    def record(self, predicted: int | None = None, written: tuple[int, ...] = ()) -> None:
        """Mark a block predicted and/or blocks written, and flush the journal to disk."""
        if predicted is not None:
            self.predicted.add(int(predicted))
        self.written.update(int(i) for i in written)
        self.save()

    def clear(self) -> None:
        self.predicted.clear()
        self.written.clear()

    def save(self) -> None:
        payload = {
            "version": JOURNAL_VERSION,
            "fingerprint": self.fingerprint,
            "predicted": sorted(self.predicted),
            "written": sorted(self.written),
        }
        with atomic_path(self.path, durable=True) as tmp:
            tmp.write_text(json.dumps(payload))
