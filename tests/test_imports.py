"""The package's import graph has no cycles, and verifiers never import ``prorl.data``.

The graph is read statically (``ast``) from every ``prorl/**/*.py``: every ``import`` and
``from ... import`` of a ``prorl`` module counts, wherever it stands (module level, inside a
function, under ``if TYPE_CHECKING``), because a lazy import only hides a cycle; shared pieces
belong in leaf modules that both sides import. ``from pkg import name`` is an edge to
``pkg.name`` when that is a module, else to ``pkg`` (its ``__init__``).
"""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Cycles tolerated for now, each as the exact set of modules of its strongly connected component.
KNOWN_CYCLES: list[frozenset[str]] = []


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``root / package``."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (anywhere in its body)."""
    modules = module_names(root, package)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolve against this module's package
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                for alias in node.names:
                    sub = f"{prefix}.{alias.name}"
                    targets.append(sub if sub in modules else prefix)
            for t in targets:
                while t and t not in modules and "." in t:  # `import prorl.x.y` of a non-module name
                    t = t.rsplit(".", 1)[0]
                if t in modules and t != mod:
                    graph[mod].add(t)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the components with more than one module (each one is a cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def a_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One concrete cycle inside ``component``, as a path that returns to its start."""
    comp = set(component)
    start = component[0]
    path, seen = [start], {start}
    while True:
        nxt = sorted(graph[path[-1]] & comp)
        back = [n for n in nxt if n in seen]
        if back:
            return path[path.index(back[0]):] + [back[0]]
        path.append(nxt[0])
        seen.add(nxt[0])


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


# --------------------------------------------------------------------------------------------
# the checker itself finds cycles (so the real check below can fail)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("b_imports_a", [  # the text of pkg/sub/b.py; pkg/a.py imports pkg.sub.b
    "from pkg import a\n",  # `from package import module`
    "import pkg.a\n",
    "import pkg.a.thing\n",  # a dotted name below a module resolves to the module
    "def f():\n    from pkg.a import thing\n",  # a lazy import still counts
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import T\n",  # relative, type-only
    "from .. import a\n",
])
def test_checker_finds_a_cycle_however_it_is_written(tmp_path, b_imports_a):
    _write(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "from pkg.sub.b import f\n",
                      "pkg/sub/__init__.py": "", "pkg/sub/b.py": b_imports_a})
    graph = import_graph(tmp_path, "pkg")
    assert strongly_connected(graph) == [["pkg.a", "pkg.sub.b"]]
    assert a_cycle(graph, ["pkg.a", "pkg.sub.b"]) == ["pkg.a", "pkg.sub.b", "pkg.a"]


def test_checker_accepts_a_diamond_and_finds_a_longer_cycle(tmp_path):
    files = {"pkg/__init__.py": "", "pkg/leaf.py": "import json\n", "pkg/x.py": "from pkg.leaf import *\n",
             "pkg/y.py": "from pkg import leaf\n", "pkg/top.py": "from pkg import x, y\n"}
    _write(tmp_path, files)
    assert strongly_connected(import_graph(tmp_path, "pkg")) == []
    _write(tmp_path, {"pkg/leaf.py": "def f():\n    import pkg.top\n"})  # leaf -> top -> x -> leaf
    graph = import_graph(tmp_path, "pkg")
    (comp,) = strongly_connected(graph)
    assert comp == ["pkg.leaf", "pkg.top", "pkg.x", "pkg.y"]
    cyc = a_cycle(graph, comp)
    assert cyc[0] == cyc[-1] and all(b in graph[a] for a, b in zip(cyc, cyc[1:]))


def test_from_package_import_name_is_an_edge_to_the_package(tmp_path):
    _write(tmp_path, {"pkg/__init__.py": "from pkg.impl import thing\n", "pkg/impl.py": "thing = 1\n",
                      "pkg/user.py": "from pkg import thing\n"})
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.user"] == {"pkg"} and graph["pkg"] == {"pkg.impl"}


# --------------------------------------------------------------------------------------------
# the real package
# --------------------------------------------------------------------------------------------
def test_prorl_has_no_import_cycles():
    graph = import_graph(ROOT, "prorl")
    assert len(graph) > 50 and graph["prorl.verifiers.logic"], "the package was not read"
    components = strongly_connected(graph)
    unexpected = [c for c in components if frozenset(c) not in KNOWN_CYCLES]
    assert not unexpected, "import cycles: " + "; ".join(" -> ".join(a_cycle(graph, c)) for c in unexpected)
    gone = [sorted(k) for k in KNOWN_CYCLES if list(sorted(k)) not in components]
    if gone:
        warnings.warn(f"known import cycle(s) {gone} no longer exist: drop them from KNOWN_CYCLES", stacklevel=1)


def test_verifiers_do_not_import_data():
    """Verifiers run in worker processes and the reward service: they depend on nothing in data/."""
    graph = import_graph(ROOT, "prorl")
    bad = {m: sorted(t for t in deps if t == "prorl.data" or t.startswith("prorl.data."))
           for m, deps in graph.items() if m.startswith("prorl.verifiers")}
    assert not {m: d for m, d in bad.items() if d}
