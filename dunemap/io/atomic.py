"""Atomic file writes: write to a temporary sibling, rename over the target only when complete."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from dunemap.io.space import full_disk_error


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import: os.umask briefly changes process state, unsafe in threads


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's (or a folder's entries') data to the disk: after it, a crash cannot leave it shorter."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it is renamed onto ``target``.

    On any exception the temporary file is removed and ``target`` is left untouched, so a reader
    never sees a half-written file. ``suffix`` defaults to the target's own suffix so that
    format-sniffing writers (GDAL, PIL, numpy) still pick the right driver. ``durable``: the file is
    fsynced before the rename and its folder after it, so a record written later (a journal that vouches
    for it) never survives a crash that the file itself does not. A write that fails on a full disk is
    one line saying so (:func:`dunemap.io.space.full_disk_error`).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.stem}.", suffix=f".tmp{target.suffix if suffix is None else suffix}", dir=target.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes 0600 files; give the result the usual umask-based mode
            os.chmod(tmp_path, 0o666 & ~_UMASK)
        if durable:
            fsync_path(tmp_path)
        os.replace(tmp_path, target)
        if durable:
            fsync_path(target.parent)
    except BaseException as exc:
        full = full_disk_error(exc, target, tmp_path)  # asked while the failed file still takes its space
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if full is not None and full is not exc:
            raise full from None
        raise
