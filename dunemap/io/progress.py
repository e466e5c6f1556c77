"""Progress bars: one factory, so every long loop draws its bar the same way, and only where someone watches.

A bar is drawn on a terminal or in a Jupyter notebook, never into a log file or a pipe (tqdm's own
``disable=None`` would also hide it in notebooks, whose stderr is no terminal). Bars are tqdm's plain
text bars (``tqdm.std``): a notebook shows them without ipywidgets, so no "IProgress not found".
``TQDM_DISABLE=1`` (set by ``--no-progress`` and ``--quiet``) still hides them all.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def watched(stream: Any = None) -> bool:
    """Whether ``stream`` (default: stderr) reaches a person: a terminal, or a Jupyter kernel's output."""
    stream = sys.stderr if stream is None else stream
    if type(stream).__module__.split(".")[0] == "ipykernel":
        return True
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or file-like stream without isatty
        return False


def progress_bar(iterable: Any = None, *, enabled: bool = True, **kwargs: Any):
    """A tqdm bar over ``iterable`` (or with ``total=``), drawn only when ``enabled`` and :func:`watched`."""
    from tqdm.std import tqdm  # deferred: tqdm is imported only by commands that loop

    hidden = os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes")  # --no-progress, --quiet
    return tqdm(iterable, disable=hidden or not (enabled and watched(kwargs.get("file"))), **kwargs)
