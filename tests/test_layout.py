"""The package's shape, read from its source: short functions, no import cycles between its parts, and a
``prac --help`` that loads neither torch nor timm (issue 23's "Must hold").

The first two read every module of ``prac_plugin`` with ``ast`` (nothing is imported); the last runs the command
in a fresh interpreter and looks at what it left in ``sys.modules``.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "prac_plugin"
MAX_FUNCTION_LINES = 80

# Functions known to be longer than MAX_FUNCTION_LINES, each named exactly (file, then qualified name): the
# engine's rework (engine/trainer.py, engine/run_loop.py) splits both, and its merge empties this set. An entry
# that is no longer too long fails the test below too, so the set can only shrink.
KNOWN_LONG_FUNCTIONS: set[tuple[str, str]] = set()  # (file, qualified name): empty; an entry must say why


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _function_lengths(path: Path) -> dict[str, int]:
    """Qualified name (``Class.method``, ``outer.<locals>.inner``) -> lines from ``def`` to the body's last line."""
    lengths: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                lengths[name] = child.end_lineno - child.lineno + 1
                visit(child, name + ".<locals>.")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(path.read_text(), str(path)), "")
    return lengths


def test_no_function_is_longer_than_80_lines():
    long = {(_relative(path), name): lines for path in _modules() for name, lines in _function_lengths(path).items()
            if lines > MAX_FUNCTION_LINES}
    unexpected = sorted(f"{file}: {name} ({lines} lines)" for (file, name), lines in long.items()
                        if (file, name) not in KNOWN_LONG_FUNCTIONS)
    assert not unexpected, f"functions over {MAX_FUNCTION_LINES} lines: " + "; ".join(unexpected)
    stale = sorted(f"{file}: {name}" for file, name in KNOWN_LONG_FUNCTIONS - set(long))
    assert not stale, ("no longer over the limit (or gone): remove from KNOWN_LONG_FUNCTIONS: " + "; ".join(stale))


# ---- the import graph ----------------------------------------------------------------------------------------

def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    """Whether ``name`` (``prac_plugin.a.b``) is a module or package of this source tree."""
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _node(module: str) -> str:
    """The graph node of a module: its top-level part (``engine``, ``errors``), one per strategies/<method>/
    (``strategies/prac``), ``strategies`` for the shared strategy modules, ``prac_plugin`` for the root."""
    parts = module.split(".")[1:]
    if not parts:
        return "prac_plugin"
    if parts[0] == "strategies" and len(parts) > 1 and (PACKAGE / "strategies" / parts[1]).is_dir():
        return f"strategies/{parts[1]}"
    return parts[0]


def _imported_modules(path: Path) -> list[tuple[str, int]]:
    """The package's own modules that ``path`` imports, anywhere in it (functions too: a lazy import defers a
    dependency, it does not remove it), with the line. ``from X import name`` where X.name is a module counts as
    importing X.name only."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.append((submodule if _is_module(submodule) else source, node.lineno))
    return [(name, line) for name, line in found if name == "prac_plugin" or name.startswith("prac_plugin.")]


def _import_graph() -> dict[str, dict[str, str]]:
    """node -> {imported node: where (file:line, the first such import)}; imports within a node are left out."""
    graph: dict[str, dict[str, str]] = {}
    for path in _modules():
        source = _node(_module_name(path))
        edges = graph.setdefault(source, {})
        for imported, line in _imported_modules(path):
            target = _node(imported)
            if target != source:
                edges.setdefault(target, f"{_relative(path)}:{line}")
    return graph


def _cycles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each as a sorted list of nodes."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, {}):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return sorted(components)


def _one_cycle(graph: dict[str, dict[str, str]], component: list[str]) -> str:
    """One closed path through ``component``, each step with the import that makes it."""
    members, start = set(component), component[0]
    paths, seen = [[start]], {start}
    while paths:  # breadth first: the shortest way back to the start
        path = paths.pop(0)
        for target in sorted(graph.get(path[-1], {})):
            if target == start:
                steps = path + [start]
                return " -> ".join(f"{a} ({graph[a][b]})" for a, b in zip(steps, steps[1:])) + f" -> {start}"
            if target in members and target not in seen:
                seen.add(target)
                paths.append(path + [target])
    return ", ".join(component)


def test_the_package_has_no_import_cycles():
    graph = _import_graph()
    assert "engine" in graph and "strategies/prac" in graph  # the nodes are found (the test reads the right tree)
    cycles = [_one_cycle(graph, component) for component in _cycles(graph)]
    assert not cycles, "import cycles between the package's parts: " + " | ".join(cycles)


def test_the_cycle_finder_finds_cycles():
    graph = {"a": {"b": "a.py:1"}, "b": {"c": "b.py:2"}, "c": {"a": "c.py:3"}, "d": {"a": "d.py:4"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _one_cycle(graph, ["a", "b", "c"]) == "a (a.py:1) -> b (b.py:2) -> c (c.py:3) -> a"
    assert _cycles({"a": {"b": ""}, "b": {}}) == []


def test_from_imports_of_modules_count_as_those_modules():
    names = dict(_imported_modules(PACKAGE / "cli" / "__init__.py"))
    assert "prac_plugin.cli.run" in names and "prac_plugin.cli" not in names
    assert _node("prac_plugin.strategies.base") == "strategies"
    assert _node("prac_plugin.strategies.prac.sets") == "strategies/prac"
    assert _node("prac_plugin") == "prac_plugin"


# ---- start-up ------------------------------------------------------------------------------------------------

HELP_PROBE = """
import json, runpy, sys
sys.argv = ["prac", "--help"]
try:
    runpy.run_module("prac_plugin", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
else:
    code = None
print("MODULES=" + json.dumps({"exit": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def test_prac_help_imports_neither_torch_nor_timm():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    child = subprocess.run([sys.executable, "-c", HELP_PROBE], env=env, capture_output=True, text=True, timeout=120)
    lines = [line for line in child.stderr.splitlines() if line.startswith("MODULES=")]
    assert child.returncode == 0 and lines, child.stderr
    report = json.loads(lines[-1][len("MODULES="):])
    assert report["exit"] in (0, None) and child.stdout.startswith("usage: prac"), child.stdout
    modules = set(report["modules"])
    assert "prac_plugin.cli" in modules  # the probe ran the command, not some other prac_plugin
    heavy = sorted(name for name in modules if name.split(".")[0] in ("torch", "timm"))
    assert not heavy, f"prac --help imported {', '.join(heavy[:10])}"
