"""The package's shape: layers that only point down, no import cycles, no module over 450 lines.

The layers are declared once, in pyproject.toml's ``[tool.importlinter]`` (docs/architecture.md explains
them); import-linter checks every import, function-level ones included, so a cycle cannot hide in a function.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

REPO = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 450


def test_layers_only_point_down() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "1 kept, 0 broken" in proc.stdout


def test_no_module_imports_itself_back() -> None:
    """No strongly connected set of modules: A imports B imports ... imports A, at top level or in a function."""
    graph = grimp.build_graph("dunemap", cache_dir=None)
    modules = sorted(graph.modules)
    index = {m: i for i, m in enumerate(modules)}
    edges = [(index[a], index[b]) for a in modules for b in graph.find_modules_directly_imported_by(a) if b in index]
    rows, cols = zip(*edges)
    adjacency = csr_matrix((np.ones(len(edges)), (rows, cols)), shape=(len(modules), len(modules)))
    _, labels = connected_components(adjacency, directed=True, connection="strong")
    cycles = [sorted(m for m in modules if labels[index[m]] == k) for k in set(labels)]
    # a package's __init__ importing its own submodules is not a cycle between modules
    cycles = [c for c in cycles if len(c) > 1 and not all(m.startswith(c[0] + ".") or m == c[0] for m in c)]
    assert not cycles, f"import cycles: {cycles}"


def test_no_module_is_over_450_lines() -> None:
    long = {str(p.relative_to(REPO)): n for p in sorted((REPO / "dunemap").rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def _function_level_dunemap_imports(path: Path) -> list[int]:
    """Line numbers of imports of dunemap modules inside functions (not at module level, not for type checking)."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and id(node) not in top:
            names = [node.module or ""] if node.level == 0 else ["dunemap"]
        elif isinstance(node, ast.Import) and id(node) not in top:
            names = [a.name for a in node.names]
        else:
            continue
        if any(n == "dunemap" or n.startswith("dunemap.") for n in names):
            lines.append(node.lineno)
    return lines


def test_function_level_imports_say_what_they_defer() -> None:
    """An import of a dunemap module inside a function defers a heavy dependency and says so: a ``deferred``
    comment on its line or the line above, or (the command line, the API, the demo) the module's docstring."""
    unexplained = []
    for path in sorted((REPO / "dunemap").rglob("*.py")):
        text = path.read_text()
        lines = text.splitlines()
        declared = "Heavy" in (ast.get_docstring(ast.parse(text)) or "") or (
            path.parent.name == "cli" and "Heavy imports" in (REPO / "dunemap" / "cli" / "__init__.py").read_text())
        for n in _function_level_dunemap_imports(path):
            near = " ".join(lines[max(n - 3, 0): n])
            if not declared and "deferred" not in near:
                unexplained.append(f"{path.relative_to(REPO)}:{n}: {lines[n - 1].strip()}")
    assert not unexplained, "function-level imports without a reason:\n" + "\n".join(unexplained)
