"""The one output policy of every command: outputs never replace inputs, existing outputs need ``--overwrite``.

Every command that writes files calls :func:`check_outputs` before it does any work, with all the
paths it will write and all the paths it reads. Paths are compared after resolving symlinks, so a
link to an input is still that input. An existing output is an error naming it unless the caller
passed ``overwrite`` (replace it) or ``resume`` (continue it); a folder output that holds an input
is refused even with ``overwrite``, since replacing the folder would delete the input.

While it writes, a command holds a lock per output (:class:`OutputLock`, :func:`locked_outputs`),
which also cleans the temporary files of killed runs; work folders are never symbolic links
(:func:`work_folder`); a run's products appear together (:func:`publish`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from dunemap.errors import DunemapError
from dunemap.io.atomic import _UMASK, fsync_path
from dunemap.io.space import full_disk_error

log = logging.getLogger(__name__)

PathLike = str | os.PathLike


class OutputExistsError(DunemapError, FileExistsError):
    """An output already exists and neither ``--overwrite`` nor ``--resume`` was given."""


class OutputIsInputError(DunemapError, ValueError):
    """An output path is (or would contain) one of the command's inputs."""


def _real(path: PathLike) -> Path:
    return Path(os.path.realpath(os.fspath(path)))


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_outputs(
    outputs: Iterable[PathLike | None],
    inputs: Iterable[PathLike | None] = (),
    *,
    overwrite: bool = False,
    resume: bool = False,
    folders: Iterable[PathLike | None] = (),
) -> None:
    """Refuse outputs that equal an input or already exist (unless ``overwrite`` or ``resume``).

    ``outputs`` are files the command will write; ``folders`` are run folders it will write into
    (an existing folder counts as existing only when it is not empty). ``None`` entries are skipped,
    so optional companions can be passed as they are.
    """
    real_inputs = [(Path(p), _real(p)) for p in inputs if p is not None]
    files = [Path(p) for p in outputs if p is not None]
    dirs = [Path(p) for p in folders if p is not None]
    for out in files:
        real = _real(out)
        for given, source in real_inputs:
            if real == source:
                raise OutputIsInputError(f"{out}: the output would overwrite the input {given}")
        if out.is_dir():
            raise OutputExistsError(f"{out}: is a folder; give a file name for this output")
    for out in dirs:
        real = _real(out)
        for given, source in real_inputs:
            if _inside(source, real):
                raise OutputIsInputError(f"{out}: the output folder holds the input {given}")
        if out.exists() and not out.is_dir():
            raise OutputExistsError(f"{out}: is a file; give a folder for this output")
    if overwrite or resume:
        return
    for out in files:
        if out.exists() or out.is_symlink():
            raise OutputExistsError(f"{out}: already exists; pass --overwrite to replace it")
    for out in dirs:
        if out.is_dir() and any(out.iterdir()):
            raise OutputExistsError(f"{out}: already holds files; choose a new folder or pass --overwrite")


class OutputLockedError(DunemapError, BlockingIOError):
    """Another running dunemap process is writing the same output."""


class OutputWriteError(DunemapError, OSError):
    """An output (or its folder, lock or work folder) cannot be written."""


def _os_reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def lock_path(output: PathLike) -> Path:
    """The lock file of ``output``: a hidden sibling ``.NAME.lock``."""
    output = Path(output)
    return output.with_name(f".{output.name}.lock")


def _temp_pattern(target: Path) -> re.Pattern:
    # the names io.atomic.atomic_path gives its temporary files: .STEM.XXXXXXXX.tmpSUFFIX
    return re.compile(rf"^\.{re.escape(target.stem)}\.[A-Za-z0-9_]{{8}}\.tmp.*$")


def clean_temp_files(target: PathLike) -> list[Path]:
    """Remove the temporary files that killed runs left beside ``target``; call it only under its lock."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    pattern = _temp_pattern(target)
    removed = []
    for entry in target.parent.iterdir():
        if pattern.match(entry.name) and entry.is_file() and not entry.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
    if removed:
        log.info("removed %d temporary file(s) of an interrupted run beside %s", len(removed), target)
    return removed


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first
        with contextlib.suppress(OSError):
            folder.rmdir()


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutputLock:
    """An exclusive lock on one output, held by this process while it writes the output.

    The lock is an ``flock`` on ``.NAME.lock`` beside the output, holding the owner's pid. The kernel
    releases it when the process dies, so the lock of a killed run is simply taken over (and said so).
    A second run on the same output is refused with a line naming the pid of the one that holds it.
    The lock is keyed on the output's resolved path, so a run reaching the same file through a symbolic
    link to a folder meets the same lock.
    """

    _held: dict[Path, list] = {}  # lock file -> [fd, depth, folders it created]: re-entrant within this process

    def __init__(self, output: PathLike) -> None:
        self.output = Path(os.path.abspath(output))  # as the user named it, for messages
        self.path = lock_path(_real(output))
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        held = OutputLock._held.get(self.path)
        if held is not None:
            held[1] += 1
            self._fd = held[0]
            return self
        made = self._take()
        OutputLock._held[self.path] = [self._fd, 1, made]
        return self

    def _take(self) -> list[Path]:
        """Lock, creating the output's folder if needed; returns the folders created (removed again if left empty)."""
        parent = self.path.parent
        made = [p for p in (parent, *parent.parents) if not p.exists()]
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputWriteError(f"{self.output}: cannot create its folder {parent} ({_os_reason(exc)})") from None
        for _ in range(5):  # retry when the holder unlinks the file between our open and our flock
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            except OSError as exc:
                _remove_empty(made)
                raise OutputWriteError(f"{self.output}: cannot write in {parent} ({_os_reason(exc)})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise OutputLockedError(
                    f"{self.output}: another dunemap run (pid {holder}) is writing this output; "
                    "wait for it to finish or stop it") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path, follow_symlinks=False).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:
            raise OutputLockedError(f"{self.output}: its lock {self.path} keeps changing; is another run starting?")
        previous = os.pread(fd, 64, 0).decode(errors="replace").strip()
        if previous.isdigit() and int(previous) != os.getpid() and not _pid_running(int(previous)):
            log.warning("%s: taking over the lock of an interrupted run (pid %s, no longer running)",
                        self.output, previous)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:  # a full disk cannot take even the pid
            os.close(fd)
            with contextlib.suppress(OSError):
                self.path.unlink()
            _remove_empty(made)
            raise (full_disk_error(exc, self.output, self.path)
                   or OutputWriteError(f"{self.output}: cannot write its lock {self.path} ({_os_reason(exc)})")) from None
        self._fd = fd
        return made

    def release(self) -> None:
        if self._fd is None:
            return
        held = OutputLock._held.get(self.path)
        self._fd = None
        if held is None:
            return
        held[1] -= 1
        if held[1] > 0:
            return
        del OutputLock._held[self.path]
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(held[0])
        _remove_empty(held[2])  # a refused or failed run leaves no folder behind

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def locked_outputs(outputs: Iterable[PathLike | None], companions: Iterable[PathLike | None] = ()) -> Iterator[None]:
    """Hold the lock of every output while the block runs, after cleaning their temporary files.

    ``outputs`` are locked (in sorted order, so two runs never deadlock); ``companions`` are files
    written with them under the same lock, whose leftover temporary files are cleaned too.
    """
    given = {_real(p): Path(p) for p in outputs if p is not None}  # one lock per file, however it is reached
    paths = [given[real] for real in sorted(given)]
    with contextlib.ExitStack() as stack:
        fresh = [real for real in given if lock_path(real) not in OutputLock._held]
        for path in paths:
            stack.enter_context(OutputLock(path))
        if fresh:
            for path in [*paths, *(Path(p) for p in companions if p is not None)]:
                clean_temp_files(path)
        yield


def work_folder(path: PathLike) -> Path:
    """Create (or reuse) a work folder such as ``OUT.partial``; never one that is a symbolic link."""
    path = Path(path)
    if path.is_symlink():
        raise OutputWriteError(f"{path}: the work folder is a symbolic link; dunemap never writes through a "
                               "link here; remove it and run again")
    if path.exists() and not path.is_dir():
        raise OutputWriteError(f"{path}: the work folder is a file; remove it and run again")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputWriteError(f"{path}: cannot create the work folder ({_os_reason(exc)})") from None
    return path


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fsync_path(folder)


def publish(products: Sequence[tuple[PathLike, PathLike]], stale: Iterable[PathLike | None] = ()) -> None:
    """Move a run's finished files onto their final paths as one set; the last pair is the primary product.

    Each pair is ``(finished temporary file or folder, final path)``, on the same file system. The order makes
    the set consistent whatever moment the process dies at: the primary's earlier version is removed
    first (so an older set is never complete beside newer companions), then ``stale`` companions of
    an earlier run that this run does not produce, then each companion, and the primary last. Its
    presence means the whole set is from one run; a run started again finishes an interrupted publish.
    """
    pairs = [(Path(t), Path(f)) for t, f in products]
    if not pairs:
        return
    primary = pairs[-1][1]
    folders = {f.parent for _, f in pairs}
    try:
        if primary.exists() or primary.is_symlink():
            primary.unlink()
        for old in stale:
            if old is not None and (Path(old).exists() or Path(old).is_symlink()):
                Path(old).unlink()
        for folder in folders:
            _fsync_dir(folder)
        for tmp, final in pairs:
            if final.is_dir() and not final.is_symlink():
                shutil.rmtree(final)  # a folder product (a dataset's tiles) is replaced whole
            os.replace(tmp, final)
        for folder in folders:
            _fsync_dir(folder)
    except OSError as exc:
        raise OutputWriteError(f"{primary}: cannot publish the run's files ({_os_reason(exc)})") from None


@contextlib.contextmanager
def claim_outputs(
    outputs: Iterable[PathLike | None],
    inputs: Iterable[PathLike | None] = (),
    *,
    overwrite: bool = False,
    resume: bool = False,
    folders: Iterable[PathLike | None] = (),
    companions: Iterable[PathLike | None] = (),
) -> Iterator[None]:
    """Lock ``outputs`` and ``folders`` (:func:`locked_outputs`), then apply :func:`check_outputs` to them.

    The lock comes first, so two runs cannot both pass the check; it is held until the block ends.
    ``companions`` are files written under the same lock (e.g. a run folder's checkpoints) whose
    temporary files left by a killed run are cleaned.
    """
    outputs, folders = list(outputs), list(folders)
    with locked_outputs([*outputs, *folders], companions):
        check_outputs(outputs, inputs, overwrite=overwrite, resume=resume, folders=folders)
        yield


def _temp_beside(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".tmp{final.suffix}", dir=final.parent)
    os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def staged_outputs(*finals: PathLike, stale: Iterable[PathLike | None] = ()) -> Iterator[list[Path]]:
    """Yield a temporary path beside each of ``finals``; when the block succeeds, :func:`publish` them as one set.

    The last of ``finals`` is the primary product (published last). On any error the temporary
    files are removed and the finals are left as they were.
    """
    paths = [Path(f) for f in finals]
    temps: list[Path] = []
    try:
        for final in paths:
            temps.append(_temp_beside(final))
        yield temps
        for tmp in temps:
            if tmp.exists():  # mkstemp makes 0600 files; give the results the usual umask-based mode
                os.chmod(tmp, 0o666 & ~_UMASK)
        publish(list(zip(temps, paths)), stale=stale)
    except Exception as exc:
        for final in paths:  # asked while the failed temporary files still take their space
            full = full_disk_error(exc, final)
            if full is not None and full is not exc:
                raise full from None
        if isinstance(exc, DunemapError) or not isinstance(exc, OSError):
            raise
        raise OutputWriteError(f"{paths[-1]}: cannot write ({_os_reason(exc)})") from None
    finally:
        for tmp in temps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
