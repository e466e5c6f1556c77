"""The README's code map names every module of the package, and nothing that is not there."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _code_map() -> dict[str, set[str]]:
    """Package folder ('' for the top level) -> the module file names the README's code map lists for it."""
    block = REPO.joinpath("README.md").read_text().split("## Code map", 1)[1].split("```")[1]
    entries: dict[str, set[str]] = {}
    current = ""
    for line in block.splitlines()[2:]:  # after the fence's language line and "dunemap/"
        start = re.match(r"^  (\w+)/\s", line)
        if start:
            current = start.group(1)
        elif re.match(r"^  \S", line):
            current = ""
        entries.setdefault(current, set()).update(re.findall(r"\b(\w+\.(?:py|yaml))\b", line))
    return entries


def test_the_code_map_lists_every_module_and_no_other() -> None:
    package = REPO / "dunemap"
    actual = {"": {p.name for p in package.glob("*.py")}}
    for folder in sorted(p for p in package.iterdir() if (p / "__init__.py").is_file()):
        actual[folder.name] = {p.name for p in folder.iterdir() if p.suffix in (".py", ".yaml")} - {"__init__.py"}
    assert _code_map() == actual
