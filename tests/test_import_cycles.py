"""hubtune's import graph, read with `ast` (nothing is imported): no cycles, no imports of hubtune inside functions.

Every import of a hubtune module anywhere in a file counts (module level, class bodies, functions, try/except),
relative imports resolved, except under ``if TYPE_CHECKING:``, which never runs. ``from pkg import name``
imports the submodule ``pkg.name`` when it is one, else needs ``pkg``'s ``__init__``; importing ``a.b.c`` also
runs the ``__init__`` of ``a.b`` (packages already being imported around the importing module excepted).
The analysis is checked first on small synthetic packages written to ``tmp_path``.
"""

from __future__ import annotations

import ast
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "hubtune"


@dataclass(frozen=True)
class Import:
    importer: str  # module holding the import statement
    target: str  # hubtune module that executing the statement imports
    path: Path
    lineno: int
    in_function: bool

    def where(self) -> str:
        try:
            path = self.path.relative_to(PACKAGE_DIR.parent)
        except ValueError:
            path = self.path
        return f"{path}:{self.lineno}"


def discover_modules(package_dir: Path) -> dict[str, Path]:
    """Module name -> file, for every .py file of the package (``pkg/a/__init__.py`` is ``pkg.a``)."""
    package_dir = Path(package_dir)
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST):
    """(node, in_function) for every Import/ImportFrom that can run (``if TYPE_CHECKING:`` bodies skipped)."""
    stack = [(tree, False)]
    while stack:
        node, in_function = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, in_function
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            children = node.orelse
        else:
            children = list(ast.iter_child_nodes(node))
        inside = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        stack.extend((child, inside) for child in reversed(children))


def _enclosing(module: str) -> set[str]:
    """``module`` and the packages around it: all of them run (or have run) before ``module``'s code does."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def collect_imports(package_dir: Path, unparsable: list[str] | None = None) -> tuple[dict[str, Path], list[Import]]:
    """Every import of a module of the package, in every module of the package.

    A file that does not parse raises, unless ``unparsable`` is a list: then its error is appended there.
    """
    modules = discover_modules(package_dir)
    root = Path(package_dir).name
    found: list[Import] = []
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        own_package = module if is_package else module.rpartition(".")[0]
        running = _enclosing(module)
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except SyntaxError as err:
            if unparsable is None:
                raise
            unparsable.append(f"{path}:{err.lineno}: {err.msg}")
            continue
        for node, in_function in _import_nodes(tree):
            targets: list[str] = []  # modules whose code must have run (or start running) for this statement

            def chain(dotted: str) -> None:
                """Importing ``dotted`` runs the __init__ of each enclosing package, then ``dotted`` itself."""
                parts = dotted.split(".")
                for i in range(1, len(parts) + 1):
                    name = ".".join(parts[:i])
                    if name in modules and name not in running:
                        targets.append(name)

            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == root or alias.name.startswith(root + "."):
                        chain(alias.name)
            else:
                if node.level:
                    base = own_package.split(".")
                    if node.level > 1:
                        base = base[: len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if not (source == root or source.startswith(root + ".")):
                    continue
                chain(source)
                for alias in node.names:
                    submodule = f"{source}.{alias.name}"
                    if alias.name != "*" and submodule in modules:
                        chain(submodule)
                    elif source in modules:
                        # a name defined by the module (or package __init__) itself: it must have finished
                        # running, even when it encloses the importer
                        targets.append(source)
            for target in dict.fromkeys(targets):
                if target != module:
                    found.append(Import(module, target, path, node.lineno, in_function))
    return modules, found


def import_graph(imports: list[Import]) -> dict[str, dict[str, Import]]:
    """importer -> {imported module: first import statement}, of the imports that run at import time.

    A function-level import runs later, when the function is called, but a function called while its
    module is being imported (or the next call after a partial import) still closes the cycle, so those
    count too: the graph is what the package may execute, not only what its top level does.
    """
    graph: dict[str, dict[str, Import]] = defaultdict(dict)
    for imp in imports:
        graph[imp.importer].setdefault(imp.target, imp)
    return graph


def strongly_connected_components(graph: dict[str, dict[str, Import]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative); only components with a cycle, each sorted, in sorted order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components = []
    nodes = sorted(set(graph) | {t for edges in graph.values() for t in edges})
    for start in nodes:
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, {}))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, {})))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, {}):
                    components.append(sorted(component))
    return sorted(components)


def _shortest_cycle_through(graph, node: str, allowed: set[str]) -> list[str]:
    previous = {node: None}
    queue = deque([node])
    while queue:
        current = queue.popleft()
        for child in sorted(graph.get(current, {})):
            if child not in allowed:
                continue
            if child == node:
                path = [current]
                while previous[path[-1]] is not None:
                    path.append(previous[path[-1]])
                return [*reversed(path), node]
            if child not in previous:
                previous[child] = current
                queue.append(child)
    return []


def find_cycles(graph: dict[str, dict[str, Import]]) -> list[list[str]]:
    """For each strongly connected component, the shortest cycle through each member, deduplicated."""
    cycles: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()
    for component in strongly_connected_components(graph):
        for node in component:
            cycle = _shortest_cycle_through(graph, node, set(component))
            if not cycle:
                continue
            ring = cycle[:-1]
            first = ring.index(min(ring))
            canonical = tuple(ring[first:] + ring[:first])
            if canonical not in seen:
                seen.add(canonical)
                cycles.append([*canonical, canonical[0]])
    return cycles


def describe_cycles(graph, cycles: list[list[str]]) -> str:
    lines = []
    for cycle in cycles:
        lines.append(" -> ".join(cycle))
        for a, b in zip(cycle, cycle[1:]):
            imp = graph[a][b]
            lines.append(f"    {a} -> {b}  ({imp.where()}{', in a function' if imp.in_function else ''})")
    return "\n".join(lines)


def function_level_imports(imports: list[Import]) -> list[Import]:
    """One entry per import statement inside a function (several targets of one statement merged)."""
    offenders: dict[tuple[Path, int], Import] = {}
    for imp in imports:
        if imp.in_function:
            offenders.setdefault((imp.path, imp.lineno), imp)
    return sorted(offenders.values(), key=lambda imp: (str(imp.path), imp.lineno))


# --------------------------------------------------------------------------------------------- hubtune itself


def _unparsable_note(unparsable: list[str]) -> str:
    return "".join(f"\n(not analysed, does not parse: {error})" for error in unparsable)


def test_hubtune_has_no_import_cycles():
    unparsable: list[str] = []
    modules, imports = collect_imports(PACKAGE_DIR, unparsable)
    assert "hubtune" in modules and len(modules) > 5
    graph = import_graph(imports)
    cycles = find_cycles(graph)
    assert not cycles, (
        f"{len(cycles)} import cycle(s) in hubtune/:\n" + describe_cycles(graph, cycles) + _unparsable_note(unparsable)
    )
    assert not unparsable, _unparsable_note(unparsable)


def test_hubtune_imports_no_hubtune_module_inside_a_function():
    unparsable: list[str] = []
    _, imports = collect_imports(PACKAGE_DIR, unparsable)
    offenders = function_level_imports(imports)
    listing = "\n".join(f"    {imp.where()}  {imp.importer} imports {imp.target}" for imp in offenders)
    assert not offenders, (
        f"{len(offenders)} import(s) of hubtune modules inside functions (import at the top of the module; "
        f"`if TYPE_CHECKING:` for annotations only):\n{listing}" + _unparsable_note(unparsable)
    )
    assert not unparsable, _unparsable_note(unparsable)


# --------------------------------------------------------------------------------------------- the analysis


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path / "pkg"


def _analyse(tmp_path, files):
    modules, imports = collect_imports(_tree(tmp_path, files))
    graph = import_graph(imports)
    return modules, imports, graph, find_cycles(graph)


def test_analysis_finds_a_two_module_cycle_and_names_its_imports(tmp_path):
    _, _, graph, cycles = _analyse(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "import os\nfrom pkg.b import g\n\ndef f():\n    return g()\n",
        "pkg/b.py": "def g():\n    from pkg import a\n    return a\n",
    })
    assert cycles == [["pkg.a", "pkg.b", "pkg.a"]]
    text = describe_cycles(graph, cycles)
    assert "pkg.a -> pkg.b -> pkg.a" in text
    assert "a.py:2" in text and "b.py:2, in a function" in text


def test_analysis_passes_a_clean_tree_with_reexporting_packages(tmp_path):
    modules, imports, graph, cycles = _analyse(tmp_path, {
        "pkg/__init__.py": "from pkg.sub import f\n",
        "pkg/base.py": "X = 1\n",
        "pkg/sub/__init__.py": "from .mod import f\nfrom . import other\n",
        "pkg/sub/mod.py": "from pkg.sub.other import g\nfrom pkg import base\nimport pkg.base\n\ndef f():\n    return g()\n",
        "pkg/sub/other.py": "from ..base import X\n\ndef g():\n    return X\n",
    })
    assert set(modules) == {"pkg", "pkg.base", "pkg.sub", "pkg.sub.mod", "pkg.sub.other"}
    assert cycles == []
    assert function_level_imports(imports) == []
    # packages already running around the importer are not edges; submodules and other packages are
    assert set(graph["pkg.sub.mod"]) == {"pkg.sub.other", "pkg.base"}
    assert set(graph["pkg.sub"]) == {"pkg.sub.mod", "pkg.sub.other"}
    assert set(graph["pkg"]) == {"pkg.sub"}


def test_analysis_resolves_relative_imports(tmp_path):
    _, imports, graph, cycles = _analyse(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/top.py": "from .deep.leaf import h\n",
        "pkg/deep/__init__.py": "",
        "pkg/deep/leaf.py": "from .. import top\n\ndef h():\n    return top\n",
        "pkg/other/__init__.py": "from . import y\nfrom .y import *\n",
        "pkg/other/y.py": "from ..deep import leaf as l\nfrom ...outside import nothing\n",
    })
    assert set(graph["pkg.top"]) == {"pkg.deep", "pkg.deep.leaf"}
    assert set(graph["pkg.deep.leaf"]) == {"pkg.top"}
    assert set(graph["pkg.other"]) == {"pkg.other.y"}
    assert set(graph["pkg.other.y"]) == {"pkg.deep", "pkg.deep.leaf"}
    assert cycles == [["pkg.deep.leaf", "pkg.top", "pkg.deep.leaf"]]


def test_analysis_counts_the_init_of_an_imported_package(tmp_path):
    # pkg.a imports pkg.sub.m, so pkg.sub's __init__ runs first, and it imports pkg.a
    _, _, graph, cycles = _analyse(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg.sub import m\n",
        "pkg/sub/__init__.py": "from pkg.a import thing\n",
        "pkg/sub/m.py": "",
    })
    assert set(graph["pkg.a"]) == {"pkg.sub", "pkg.sub.m"}
    assert cycles == [["pkg.a", "pkg.sub", "pkg.a"]]


def test_analysis_reports_a_name_imported_from_an_enclosing_package(tmp_path):
    # the package's __init__ imports the module before defining VERSION: a real circular import
    _, _, graph, cycles = _analyse(tmp_path, {
        "pkg/__init__.py": "from pkg.a import f\nVERSION = 1\n",
        "pkg/a.py": "from pkg import VERSION\n\ndef f():\n    return VERSION\n",
    })
    assert cycles == [["pkg", "pkg.a", "pkg"]]


def test_analysis_ignores_type_checking_blocks_and_flags_function_level_imports(tmp_path):
    _, imports, graph, cycles = _analyse(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg.b import g\n",
        "pkg/b.py": (
            "from __future__ import annotations\n"
            "import typing\n"
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n"
            "    from pkg.a import A\n"
            "if typing.TYPE_CHECKING:\n"
            "    import pkg.a\n"
            "else:\n"
            "    import pkg.c\n"
            "def g(x: A) -> None:\n"
            "    if TYPE_CHECKING:\n"
            "        from pkg import a\n"
            "    import json\n"
            "\n"
            "class K:\n"
            "    def m(self):\n"
            "        from . import c\n"
            "        return lambda: __import__('json')\n"
        ),
        "pkg/c.py": "",
    })
    assert cycles == []
    assert set(graph["pkg.b"]) == {"pkg.c"}
    offenders = function_level_imports(imports)
    assert [(imp.importer, imp.target, imp.lineno) for imp in offenders] == [("pkg.b", "pkg.c", 17)]


def test_analysis_finds_every_cycle_of_a_tangle(tmp_path):
    _, _, graph, cycles = _analyse(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "import pkg.b\nimport pkg.c\n",
        "pkg/b.py": "import pkg.a\n",
        "pkg/c.py": "import pkg.a\n",
        "pkg/d.py": "import pkg.d\nimport pkg.a\n",  # a module importing itself is no edge
    })
    assert cycles == [["pkg.a", "pkg.b", "pkg.a"], ["pkg.a", "pkg.c", "pkg.a"]]
    assert set(graph["pkg.d"]) == {"pkg.a"}


def test_analysis_reports_files_that_do_not_parse(tmp_path):
    package = _tree(tmp_path, {"pkg/__init__.py": "", "pkg/bad.py": "def f(:\n", "pkg/a.py": "import pkg.b\n", "pkg/b.py": ""})
    with pytest.raises(SyntaxError):
        collect_imports(package)
    unparsable: list[str] = []
    modules, imports = collect_imports(package, unparsable)
    assert len(unparsable) == 1 and "bad.py:1" in unparsable[0]
    assert [(imp.importer, imp.target) for imp in imports] == [("pkg.a", "pkg.b")]


@pytest.mark.parametrize("name", ["hubtune", "hubtune.losses", "hubtune.losses.core_tuning"])
def test_discovery_names_hubtune_modules(name):
    assert name in discover_modules(PACKAGE_DIR)
