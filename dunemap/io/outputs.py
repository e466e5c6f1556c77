"""The one output policy of every command: outputs never replace inputs, existing outputs need ``--overwrite``.

Every command that writes files calls :func:`check_outputs` before it does any work, with all the
paths it will write and all the paths it reads. Paths are compared after resolving symlinks, so a
link to an input is still that input. An existing output is an error naming it unless the caller
passed ``overwrite`` (replace it) or ``resume`` (continue it); a folder output that holds an input
is refused even with ``overwrite``, since replacing the folder would delete the input.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from dunemap.errors import DunemapError

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
