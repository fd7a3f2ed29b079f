"""
No import cycles: modules that import each other at import time, or server packages that
depend on each other, make the next change harder and hide start-up order bugs.

Read from the source (nothing is imported): a module's import-time imports are its top-level
`import` statements, including those under top-level `if`/`try` blocks, except under
`if TYPE_CHECKING:` (annotations only). Imports inside functions are deliberate late bindings
(Django's `AppConfig.ready`, a command's optional dependency) and are not edges.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import debusine

ROOT = Path(debusine.__file__).parent


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_modules(root: Path) -> dict[str, Path]:
    """Every module of the package at `root`, tests and migrations left out."""
    modules: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).parts
        if "tests" in relative or "migrations" in relative:
            continue
        modules[module_name(path, root)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_time_statements(body: Iterable[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    for statement in body:
        if isinstance(statement, ast.Import | ast.ImportFrom):
            yield statement
        elif isinstance(statement, ast.If):
            if not _is_type_checking(statement.test):
                yield from import_time_statements(statement.body)
            yield from import_time_statements(statement.orelse)
        elif isinstance(statement, ast.Try):
            for block in (statement.body, statement.orelse, statement.finalbody):
                yield from import_time_statements(block)
            for handler in statement.handlers:
                yield from import_time_statements(handler.body)


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of `modules` it imports at import time."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for statement in import_time_statements(ast.parse(path.read_text()).body):
            if isinstance(statement, ast.Import):
                targets = [alias.name for alias in statement.names]
            else:
                base = statement.module or ""
                if statement.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - statement.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                # `from package import submodule` imports the submodule.
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in statement.names
                ]
            graph[name].update(
                target for target in targets if target in modules and target != name
            )
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def server_package(module: str) -> str | None:
    """`debusine.server.<package>` a module belongs to (a top-level module is its own)."""
    parts = module.split(".")
    if parts[:2] != ["debusine", "server"] or len(parts) < 3:
        return None
    return ".".join(parts[:3])


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The import graph between server packages (`debusine.server.api`, `.db`, ...)."""
    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        source = server_package(module)
        if source is None:
            continue
        edges = packages.setdefault(source, set())
        for target in targets:
            destination = server_package(target)
            if destination is not None and destination != source:
                edges.add(destination)
    return packages


def test_no_module_imports_itself_back_at_import_time() -> None:
    assert cycles(import_graph(source_modules(ROOT))) == []


def test_no_two_server_packages_import_each_other() -> None:
    assert cycles(package_graph(import_graph(source_modules(ROOT)))) == []


def test_the_checks_see_cycles(tmp_path: Path) -> None:
    """The detectors above notice a cycle, and ignore annotation-only and late imports."""
    package = tmp_path / "debusine"
    (package / "server" / "alpha").mkdir(parents=True)
    (package / "server" / "beta").mkdir(parents=True)
    for directory in (package, package / "server"):
        (directory / "__init__.py").write_text("")
    (package / "server" / "alpha" / "__init__.py").write_text("")
    (package / "server" / "beta" / "__init__.py").write_text("")
    (package / "server" / "alpha" / "one.py").write_text("from debusine.server.beta import two\n")
    (package / "server" / "beta" / "two.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from debusine.server.alpha import one\n"
        "def late():\n"
        "    from debusine.server.alpha import one\n"
    )
    (package / "server" / "beta" / "three.py").write_text("from . import two\n")
    graph = import_graph(source_modules(package))
    assert graph["debusine.server.beta.three"] == {"debusine.server.beta.two"}
    assert cycles(graph) == []
    assert cycles(package_graph(graph)) == []

    (package / "server" / "beta" / "two.py").write_text(
        "try:\n    import debusine.server.alpha.one\nexcept ImportError:\n    pass\n"
    )
    graph = import_graph(source_modules(package))
    assert cycles(graph) == [["debusine.server.alpha.one", "debusine.server.beta.two"]]
    (package / "server" / "beta" / "two.py").write_text("import debusine.server.alpha\n")
    graph = import_graph(source_modules(package))
    assert cycles(graph) == []
    assert cycles(package_graph(graph)) == [["debusine.server.alpha", "debusine.server.beta"]]
