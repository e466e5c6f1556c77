"""Progress bars are drawn where a person watches (a terminal, a notebook) and never into logs or pipes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SCRIPT = ("from dunemap.io.progress import progress_bar\n"
          "for _ in progress_bar(range(50), desc='work', mininterval=0): pass\n")


def test_no_bar_in_a_log_file(tmp_path) -> None:
    log = tmp_path / "run.log"
    with open(log, "w") as stderr:
        subprocess.run([sys.executable, "-c", SCRIPT], stderr=stderr, check=True, env={**os.environ, "TQDM_DISABLE": ""})
    assert log.read_text() == ""


def _on_a_terminal(**env: str) -> bytes:
    """What SCRIPT draws when its stderr is a terminal 100 columns wide."""
    import fcntl
    import struct
    import termios

    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    drawn = b""
    try:
        subprocess.run([sys.executable, "-c", SCRIPT], stderr=follower, check=True,
                       env={**os.environ, "TQDM_DISABLE": "", **env})
        os.close(follower)
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed: everything was read
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(leader)
    return drawn


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_a_bar_on_a_terminal_unless_progress_is_off() -> None:
    drawn = _on_a_terminal()
    assert b"work: 100%" in drawn and b"50/50" in drawn
    assert b"work" not in _on_a_terminal(TQDM_DISABLE="1")  # what --no-progress and --quiet set


def test_a_notebook_stream_is_watched_a_file_is_not(tmp_path) -> None:
    from dunemap.io.progress import watched

    class OutStream:  # the class ipykernel gives sys.stderr in a notebook
        def isatty(self) -> bool:
            return False

    OutStream.__module__ = "ipykernel.iostream"
    assert watched(OutStream())
    with open(tmp_path / "f.txt", "w") as f:
        assert not watched(f)


def test_bars_are_plain_text_so_notebooks_need_no_ipywidgets() -> None:
    from tqdm.std import tqdm

    from dunemap.io.progress import progress_bar

    bar = progress_bar(range(3), enabled=False)
    assert type(bar) is tqdm  # tqdm.auto would pick tqdm.notebook in Jupyter: "IProgress not found"
    code = "\n".join(p.read_text() for p in _package_files())
    assert "tqdm.auto" not in code and "from tqdm import" not in code


def _package_files():
    from pathlib import Path

    import dunemap

    return sorted(Path(dunemap.__file__).parent.rglob("*.py"))
