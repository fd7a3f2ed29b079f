"""
The layout rules of DESIGN.md §3 that code review alone would not keep.

- `debusine/{protocol,tasks,artifacts,worker,client}` run on workers and client machines without
  the server: importing any of their modules must not import Django, DRF, Channels or Celery.
- `debusine/testing/` (development stack, embedded services, test helpers) is never imported by
  a production module, at module level or inside a function; `TOOLING_HOOKS` lists the one
  exception and why.
- `bench/` uses debusine as a program would: no test module, no private (`_name`) name.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import debusine

DJANGO_FREE_PACKAGES = ["protocol", "tasks", "artifacts", "worker", "client"]
# Tooling that starts worker daemons next to them, Django-free like the worker itself.
DJANGO_FREE_TOOLING = ["debusine.testing.worker", "debusine.testing.processes"]
FORBIDDEN = ("django", "rest_framework", "channels", "celery")

PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted(sys.modules)))
"""


def django_free_modules() -> list[str]:
    """Every non-test module of the Django-free packages, and DJANGO_FREE_TOOLING."""
    root = Path(debusine.__file__).parent
    names: list[str] = []
    for package in DJANGO_FREE_PACKAGES:
        path = root / package
        if not path.is_dir():
            continue
        names.append(f"debusine.{package}")
        for info in pkgutil.walk_packages([str(path)], prefix=f"debusine.{package}."):
            if ".tests" not in info.name and not info.name.endswith(".tests"):
                names.append(info.name)
    return names + DJANGO_FREE_TOOLING


def test_django_free_packages_do_not_import_django() -> None:
    modules = django_free_modules()
    assert "debusine.protocol" in modules
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *modules],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    imported = json.loads(result.stdout)
    offenders = [name for name in imported if name.split(".")[0] in FORBIDDEN]
    assert offenders == [], f"Django-free packages imported {offenders}"


@pytest.mark.parametrize("package", ["django", "rest_framework"])
def test_probe_detects_a_forbidden_import(package: str) -> None:
    """The probe above would notice a forbidden import (so the test can fail)."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE, package],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert package in json.loads(result.stdout)


# -- debusine.testing stays out of production ---------------------------------------------------

TOOLING = "debusine.testing"
#: (importing module, imported module) -> why production code may import the tooling there.
TOOLING_HOOKS = {
    ("debusine.server.management.main", "debusine.testing.embedded"): (
        "debusine-admin starts the embedded PostgreSQL of a `make run` data directory, and"
        " imports the tooling only after instance.may_use_embedded_postgres() found one"
    ),
}


def module_name(path: Path, root: Path) -> str:
    """The dotted name of the module in `path`, a file under the directory `root` sits in."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """
    Every module that `source` imports, anywhere in it (`from m import n` counts as `m.n`).

    Relative imports are resolved against `module`; function-local and `TYPE_CHECKING`
    imports count like module-level ones.
    """
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def is_test_path(path: Path) -> bool:
    return "tests" in path.parts or path.name == "conftest.py"


def tooling_imports_outside_tooling(root: Path) -> dict[str, set[str]]:
    """Production modules under `root` (a `debusine` tree) that import debusine.testing."""
    offenders: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if relative.parts[0] == "testing" or is_test_path(relative):
            continue
        name = module_name(path, root)
        imports = imported_modules(path.read_text(), name, is_package=path.name == "__init__.py")
        tooling = {
            imported
            for imported in imports
            if imported == TOOLING or imported.startswith(f"{TOOLING}.")
        }
        if tooling:
            offenders[name] = tooling
    return offenders


def test_production_modules_never_import_the_tooling() -> None:
    root = Path(debusine.__file__).parent
    offenders = tooling_imports_outside_tooling(root)

    def allowed(module: str, imported: str) -> bool:
        return any(
            module == hook_module and (imported == hooked or imported.startswith(f"{hooked}."))
            for hook_module, hooked in TOOLING_HOOKS
        )

    unexpected = {
        module: sorted(name for name in imported if not allowed(module, name))
        for module, imported in offenders.items()
    }
    unexpected = {module: imported for module, imported in unexpected.items() if imported}
    assert unexpected == {}, f"production modules import debusine.testing: {unexpected}"
    # An allowed hook that is gone must leave the list too.
    for hook_module, hooked in TOOLING_HOOKS:
        assert any(allowed(hook_module, name) for name in offenders.get(hook_module, ())), (
            f"{hook_module} no longer imports {hooked}: drop it from TOOLING_HOOKS"
        )


def test_tooling_check_finds_every_kind_of_import(tmp_path: Path) -> None:
    """The check above would notice an import of the tooling (so that test can fail)."""
    root = tmp_path / "debusine"
    (root / "server" / "tests").mkdir(parents=True)
    (root / "testing").mkdir()
    (root / "__init__.py").write_text("")
    (root / "server" / "__init__.py").write_text("")
    (root / "server" / "top.py").write_text("import debusine.testing.playground\n")
    (root / "server" / "local.py").write_text(
        "def f():\n    from debusine import testing\n    return testing\n"
    )
    (root / "server" / "relative.py").write_text("from ..testing.worker import start_worker\n")
    (root / "server" / "clean.py").write_text("from debusine.server import top\n")
    (root / "server" / "tests" / "test_x.py").write_text("import debusine.testing.playground\n")
    (root / "testing" / "devstack.py").write_text("import debusine.testing.embedded\n")
    offenders = tooling_imports_outside_tooling(root)
    assert sorted(offenders) == [
        "debusine.server.local",
        "debusine.server.relative",
        "debusine.server.top",
    ]


# -- bench/ imports no test module and no private name -------------------------------------------


def bench_violations(source: str, module: str) -> list[str]:
    """Imports of test modules and uses of private debusine names in one bench module."""
    violations: list[str] = []
    tree = ast.parse(source)
    # Names bound to debusine modules, so that `module._private` is noticed too.
    debusine_names: set[str] = set()
    for imported in sorted(imported_modules(source, module)):
        parts = imported.split(".")
        if "tests" in parts or parts[0] == "tests":
            violations.append(f"imports test module {imported}")
        elif parts[0] == "debusine" and any(
            part.startswith("_") and not part.startswith("__") for part in parts
        ):
            violations.append(f"imports private name {imported}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "debusine":
                    debusine_names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("debusine"):
            debusine_names.update(alias.asname or alias.name for alias in node.names)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and isinstance(node.value, ast.Name)
            and node.value.id in debusine_names
        ):
            violations.append(f"uses private name {node.value.id}.{node.attr}")
    return violations


def test_bench_imports_no_test_module_and_no_private_name() -> None:
    bench = Path(debusine.__file__).parent.parent / "bench"
    violations = {
        path.name: found
        for path in sorted(bench.glob("*.py"))
        if (found := bench_violations(path.read_text(), f"bench.{path.stem}"))
    }
    assert violations == {}


@pytest.mark.parametrize(
    "source",
    [
        "from debusine.worker.tests.stub_server import StubServer\n",
        "import tests.integration.conftest\n",
        "from debusine.tasks.executors.cache import _recompressed\n",
        "def f():\n    from debusine.server import _private\n",
        "from debusine.tasks.executors import cache\ncache._recompressed()\n",
    ],
    ids=["test-module", "tests-package", "private-name", "local-private", "private-attribute"],
)
def test_bench_check_finds_test_modules_and_private_names(source: str) -> None:
    """The check above would notice each kind of violation (so that test can fail)."""
    assert bench_violations(source, "bench.example") != []
