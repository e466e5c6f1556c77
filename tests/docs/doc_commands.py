"""Every ``dunemap ...`` command line shown in README.md and docs/*.md, extracted the way a reader copies them."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@dataclass(frozen=True)
class DocCommand:
    source: str  # file:line
    text: str  # as printed, without the leading "dunemap"

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.text, comments=True)


def _blocks(text: str):
    """(line number, command) of shell lines in fenced code blocks (continuations joined) and inline code spans."""
    fenced = False
    pending, start = "", 0
    for n, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            if pending:
                pending += " " + line.strip().rstrip("\\").strip()
            elif line.strip():
                pending, start = line.strip().rstrip("\\").strip(), n
            if pending and not line.rstrip().endswith("\\"):
                yield start, pending
                pending = ""
            continue
        for span in re.findall(r"`([^`]+)`", line):
            yield n, span.strip()


def doc_commands() -> list[DocCommand]:
    out = []
    for path in DOCS:
        for n, line in _blocks(path.read_text()):
            m = re.match(r"^(?:\$ )?dunemap (.+)$", line)
            if m and not m.group(1).startswith(("/", ".", "_")):  # not a path such as dunemap/io/outputs.py
                out.append(DocCommand(f"{path.relative_to(REPO)}:{n}", m.group(1)))
    return out
