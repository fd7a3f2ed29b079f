"""
Shared helpers of the tests of the QA tasks (lintian, autopkgtest, piuparts): test packages
built once per session, a lookup resolver over a fixed table, and a way to run a task's stages
without a server.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from debusine.tasks.base import BaseTask, Lookup, LookupFailedError, LookupResult
from debusine.tasks.execution import DebugLogs, TaskContext
from debusine.tasks.executors.cache import CachedEnvironment
from debusine.tasks.tests.packages import (
    as_worker_user,
    give_to_worker_user,
    make_source_package,
    make_worker_directory,
)
from debusine.testing.environments import BUILDD_TARBALL

#: The environment the slow tests use (made by mmdebstrap --variant=buildd bookworm): the
#: tests that use it ask for the `buildd_tarball` fixture, which makes it when missing.
BOOKWORM_TARBALL = BUILDD_TARBALL
BOOKWORM_DATA: dict[str, Any] = {
    "filename": BOOKWORM_TARBALL.name,
    "vendor": "debian",
    "codename": "bookworm",
    "mirror": "http://deb.debian.org/debian",
    "variant": "buildd",
    "pkglist": {},
    "architecture": "amd64",
    "with_dev": True,
    "with_init": False,
}


def tools_available(*names: str) -> bool:
    return all(shutil.which(name) is not None for name in names)


def build_test_packages(directory: Path, *, fail_autopkgtest: bool = False) -> dict[str, Path]:
    """
    Make the test source package in `directory` and build its binaries (no debhelper: the host
    has none); return the paths of "dsc", "any" (the arch-any .deb) and "all".
    """
    dsc = make_source_package(
        directory, debhelper=False, fail_autopkgtest=fail_autopkgtest, version="1.0-1"
    )
    subprocess.run(
        ["dpkg-buildpackage", "-us", "-uc", "-b"],
        cwd=directory / "hello-debusine-1.0",
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return {
        "dsc": dsc,
        "any": next(directory.glob("hello-debusine_1.0-1_*.deb")),
        "all": directory / "hello-debusine-data_1.0-1_all.deb",
    }


class TableResolver:
    """A LookupResolver answering from a table: lookup -> artifact ID(s)."""

    def __init__(self, table: Mapping[Any, int | list[int]]) -> None:
        self.table = table
        self.calls: list[tuple[str, Any, str]] = []

    def _key(self, lookup: Any) -> Any:
        if isinstance(lookup, dict):
            return tuple(sorted(lookup.items()))
        if isinstance(lookup, list):
            return tuple(self._key(item) for item in lookup)
        return lookup

    def lookup_single(
        self, lookup: Lookup, *, expect_type: str, default_category: str | None = None
    ) -> LookupResult:
        self.calls.append(("single", lookup, expect_type))
        found = self.table.get(self._key(lookup))
        if not isinstance(found, int):
            raise LookupFailedError(f"{lookup!r} does not exist")
        return LookupResult("a", artifact=found)

    def lookup_multiple(
        self,
        lookup: Lookup | list[Lookup],
        *,
        expect_type: str,
        default_category: str | None = None,
    ) -> list[LookupResult]:
        self.calls.append(("multiple", lookup, expect_type))
        items = lookup if isinstance(lookup, list) else [lookup]
        results = []
        for item in items:
            found = self.table.get(self._key(item))
            if found is None:
                raise LookupFailedError(f"{item!r} does not exist")
            for artifact in found if isinstance(found, list) else [found]:
                results.append(LookupResult("a", artifact=artifact))
        return results


class StagesRunner:
    """
    Runs a task's stages by hand (no server): a worker-owned run directory, debug logs, and
    the environment given directly instead of downloaded.
    """

    def __init__(self, task: BaseTask[Any], *, environment: Path | None = None) -> None:
        self.task = task
        self.base = make_worker_directory("debusine-qa-test-")
        self.context = TaskContext.create(1, "System", self.base)
        give_to_worker_user(self.base)
        task.context = self.context
        task.debug_logs = DebugLogs(self.context.debug_log_directory)
        if environment is not None:
            cached = CachedEnvironment(artifact_id=1, tarball=environment, data=BOOKWORM_DATA)
            # The environment is the cached tarball itself, not one downloaded from a server.
            task.get_environment = lambda: cached  # type: ignore[attr-defined]

    @property
    def input_directory(self) -> Path:
        return self.context.input_directory

    @property
    def execute_directory(self) -> Path:
        return self.context.execute_directory

    def add_input(self, *paths: Path) -> None:
        for path in paths:
            shutil.copy(path, self.input_directory / path.name)
        give_to_worker_user(self.input_directory)

    def debug_log(self, name: str) -> str:
        self.task.debug_logs.close_all()
        path = self.context.debug_log_directory / name
        return path.read_text(encoding="utf-8") if path.exists() else ""

    def close(self) -> None:
        self.task.debug_logs.close_all()
        try:
            self.task.cleanup()
        finally:
            # Files made inside user namespaces belong to subordinate IDs: root removes them.
            shutil.rmtree(self.base, ignore_errors=True)


WORKER_PREFIX = as_worker_user([])
