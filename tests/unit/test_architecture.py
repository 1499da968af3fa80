"""The layout rules of issue 10, checked on the source of `runtime/` and `gateway/`.

- SQLAlchemy statements (`select`, `insert`, `update`, `delete`, `text`) are built only
  under `runtime/store/`.
- No module is over 400 lines.
- No import cycle among the modules of `runtime/` and `gateway/`. The graph holds the
  imports a module runs when it is loaded: imports under `if TYPE_CHECKING:` (never run)
  and imports inside functions (run later, on call, once every module is loaded) are left
  out, since neither can fail for a cycle at load time.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("runtime", "gateway")
MAX_LINES = 400
STATEMENTS = frozenset({"select", "insert", "update", "delete", "text"})
#: Modules of other helpers' work still in flight; each entry goes when its split lands.
KNOWN_LONG: dict[str, str] = {}
#: Import cycles still in flight, as sorted tuples of module names; same rule as above.
KNOWN_CYCLES: set[tuple[str, ...]] = set()


def _modules() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            yield path.relative_to(ROOT).as_posix(), path


def _name(relative: str) -> str:
    parts = relative.removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level(tree: ast.Module) -> Iterator[ast.stmt]:
    """Statements run at load: into `if`/`try` blocks, not functions, not TYPE_CHECKING."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If):
            test = ast.unparse(node.test)
            if test in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                stack.extend(node.orelse)
                continue
            stack.extend(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            stack.extend(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                stack.extend(handler.body)
        elif isinstance(node, ast.ClassDef):
            stack.extend(node.body)
        else:
            yield node


def _sql_statements(tree: ast.Module) -> Iterator[str]:
    """Where a module imports or calls a SQLAlchemy statement construct."""
    aliases = {"sqlalchemy"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases |= {a.asname or a.name for a in node.names if a.name == "sqlalchemy"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
            for alias in node.names:
                if alias.name in STATEMENTS:
                    yield f"line {node.lineno}: from {node.module} import {alias.name}"
        elif isinstance(node, ast.Attribute) and node.attr in STATEMENTS:
            if isinstance(node.value, ast.Name) and node.value.id in aliases:
                yield f"line {node.lineno}: {node.value.id}.{node.attr}"


def test_sql_statements_live_only_in_the_store():
    offenders = [
        f"{relative} {where}"
        for relative, path in _modules()
        if not relative.startswith("runtime/store/")
        for where in _sql_statements(ast.parse(path.read_text()))
    ]
    assert offenders == []


def test_no_module_is_over_400_lines():
    long = {
        relative: n
        for relative, path in _modules()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert {r: n for r, n in long.items() if r not in KNOWN_LONG} == {}
    # An allowance that is no longer needed must go.
    assert set(KNOWN_LONG) <= set(long), "drop the entries that are short enough now"


def _import_graph() -> dict[str, set[str]]:
    modules = {_name(relative): path for relative, path in _modules()}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in _top_level(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    package = name if is_package else name.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        package = package.rpartition(".")[0]
                    base = f"{package}.{base}".rstrip(".")
                # `from package import module` imports the module; else the package itself.
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            for target in targets:
                # Importing a.b.c loads a and a.b first; each of them is an edge, except
                # the importer's own packages, which Python has started loading already.
                parts = target.split(".")
                for i in range(1, len(parts) + 1):
                    prefix = ".".join(parts[:i])
                    if prefix in modules and not f"{name}.".startswith(f"{prefix}."):
                        graph[name].add(prefix)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[tuple[str, ...]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(tuple(sorted(component)))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles():
    cycles = _cycles(_import_graph())
    assert [c for c in cycles if c not in KNOWN_CYCLES] == []
    assert set(KNOWN_CYCLES) <= set(cycles), "drop the entries that are gone now"
