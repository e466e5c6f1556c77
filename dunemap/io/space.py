"""A full disk, recognised and said in one line: which output, which device, what to do.

Writers fail on a full file system in many ways: ``OSError`` 28 from Python, GDAL's "Write failed. See
previous exception", a GeoPackage's "no such table", torch's ``inline_container.cc`` errors. Each place
that writes an output (:func:`dunemap.io.atomic.atomic_path`, :func:`dunemap.io.outputs.staged_outputs`, the
map's work folder) asks :func:`full_disk_error` while the failed file is still there, so the free space it
sees is what the write left, and raises what it returns.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from dunemap.errors import DunemapError

FULL_BYTES = 1 << 20  # a write that fails with less than this free on its file system failed for want of space
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_FULL_TEXTS = ("no space left on device", "disk quota exceeded")


class NoSpaceError(DunemapError, OSError):
    """An output cannot be written: its file system is full."""


def free_bytes(path: str | os.PathLike) -> int | None:
    """Bytes this process may still write on the file system holding ``path`` (its nearest existing folder)."""
    folder = Path(os.path.abspath(path))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    blocks = st.f_bfree if os.geteuid() == 0 else st.f_bavail  # root may use the reserved blocks
    return blocks * st.f_frsize


def mount_point(path: str | os.PathLike) -> Path:
    """The mount point of the file system holding ``path``."""
    folder = Path(os.path.abspath(path))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    while not os.path.ismount(folder) and folder != folder.parent:
        folder = folder.parent
    return folder


def says_no_space(exc: BaseException) -> bool:
    """Whether ``exc``, or an exception it was raised from, is the operating system's "no space left on device"."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if isinstance(link, OSError) and link.errno in _FULL_ERRNOS:
            return True
        if any(text in str(link).lower() for text in _FULL_TEXTS):
            return True
        link = link.__cause__ or link.__context__
    return False


def full_disk_error(exc: BaseException, output: str | os.PathLike,
                    written: str | os.PathLike | None = None) -> NoSpaceError | None:
    """The one-line error for ``output`` when ``exc`` (raised while writing ``written``, default ``output``)
    came from a full file system, else None.

    Full means: the exception (or one it was raised from) says so, or it is a write error (not one of
    dunemap's refusals of bad input) and less than :data:`FULL_BYTES` are left where ``written`` goes.
    """
    if isinstance(exc, NoSpaceError):
        return exc
    if not isinstance(exc, Exception):
        return None  # KeyboardInterrupt, SystemExit
    where = Path(written if written is not None else output)
    full = says_no_space(exc)
    if not full and not (isinstance(exc, DunemapError) and not isinstance(exc, OSError)):
        free = free_bytes(where.parent)
        full = free is not None and free < FULL_BYTES
    if not full:
        return None
    return NoSpaceError(f"{output}: no space left on device {mount_point(where)} "
                        f"({_size(free_bytes(where.parent))} free); free some space there or write elsewhere")


def _size(n: int | None) -> str:
    if n is None:
        return "unknown"
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
