"""The shape of the package, read from its source with ``ast``: no import circles between
modules, no long library functions, and a torch-free ``import wassnet``.

**The import graph.** One node per module under ``wassnet/`` (a package is its
``__init__.py``); one edge per ``import`` statement anywhere in a module, at module level
or inside a function or class (a function-level import that closes a circle is still a
circle: it only moves the failure from import time to call time), relative or absolute.
``if TYPE_CHECKING:`` blocks are skipped (they never run).

* ``from a.b import c`` is an edge to the module ``a.b.c`` when that is a module, else to
  ``a.b``; ``import a.b.c`` is an edge to ``a.b.c``.
* Importing ``a.b.c`` also runs the ``__init__`` of ``a`` and ``a.b``: those are edges
  too, **except** to the importer's own enclosing packages. Python initializes a
  package before any of its submodules, so ``a.b.x`` importing ``a.b.y`` never re-runs
  ``a.b``; counting that edge would make every package whose ``__init__`` imports its
  submodules (the edge ``pkg -> pkg.sub``, which is fine) a circle with each of them.
  A submodule that names its own package (``from wassnet.w1 import X`` inside
  ``wassnet/w1/sample.py``) is an edge ``pkg.sub -> pkg`` like any other, and a circle if
  ``pkg/__init__`` imports ``pkg.sub`` back.

A circle is a strongly connected component of more than one module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "wassnet"

#: The longest a library function may be (``def`` to its last line, docstring included).
MAX_FUNCTION_LINES = 80


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of ``tree`` outside ``if TYPE_CHECKING:`` blocks."""
    found: list[ast.Import | ast.ImportFrom] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return found


def _targets(name: str, is_package: bool, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The dotted names ``node`` imports, relative imports resolved against ``name``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = name if is_package else name.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def _edges(name: str, target: str, modules: dict[str, Path]) -> set[str]:
    """Modules of the package that importing ``target`` from ``name`` runs (see the
    module notes): the deepest existing module and its ancestors, less ``name``'s own."""
    parts = target.split(".")
    prefixes = [".".join(parts[:k]) for k in range(1, len(parts) + 1)]
    found = [p for p in prefixes if p in modules]
    own = {".".join(name.split(".")[:k]) for k in range(1, name.count(".") + 2)}
    return {p for p in found if p not in own}


def import_graph() -> dict[str, set[str]]:
    """``{module: modules it imports}`` for every module under ``wassnet/``."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in _imports(tree):
            imported = _targets(name, is_package, node)
            if isinstance(node, ast.ImportFrom):
                # `from a import b`: b is a submodule or a name in a; a runs either way
                imported = [imported[0]] + [t for t in imported[1:] if t in modules]
            for target in imported:
                edges |= _edges(name, target, modules)
        graph[name] = edges - {name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_graph_reader_sees_every_kind_of_import():
    """The reader itself: function-level, relative and package imports are edges."""
    graph = import_graph()
    assert "wassnet.nn.lipschitz" in graph["wassnet.nn.export"]  # absolute, module level
    assert "wassnet.norms" in graph["wassnet.names"]  # `from wassnet import norms`
    assert "wassnet.nn.bjorck" in graph["wassnet.nn"]  # a package's __init__
    assert "wassnet.w1" not in graph["wassnet.w1.sample"]  # own package: implicit
    mods = _modules()
    tree = ast.parse("def f():\n    from ..ot import metrics\nimport wassnet.nn.aol\n")
    edges = set()
    for node in _imports(tree):
        for target in _targets("wassnet.w1.sample", False, node):
            if target in mods:
                edges |= _edges("wassnet.w1.sample", target, mods)
    assert edges == {"wassnet.ot", "wassnet.ot.metrics", "wassnet.nn", "wassnet.nn.aol"}


def test_circle_finder():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert circles(graph) == [frozenset("abc")]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    found = circles(import_graph())
    unknown = [sorted(c) for c in found]
    assert unknown == [], f"import circles between modules: {unknown}"


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_no_long_library_functions():
    long = []
    for path in sorted(ROOT.rglob("*.py")):
        where = path.relative_to(ROOT).as_posix()
        for fn in _functions(ast.parse(path.read_text(), str(path))):
            lines = fn.end_lineno - fn.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                long.append(f"{where}:{fn.lineno} {fn.name} ({lines} lines)")
    assert long == [], f"library functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_import_wassnet_does_not_import_torch():
    """The package, its norm table and name registry are torch-free (``--help`` speed)."""
    code = (
        "import sys, wassnet, wassnet.norms, wassnet.names, wassnet.errors; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
