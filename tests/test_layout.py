"""
The layout rules of DESIGN.md §3 that code review alone would not keep.

`debusine/{protocol,tasks,artifacts,worker,client}` run on workers and client machines without
the server: importing any of their modules must not import Django, DRF, Channels or Celery.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import debusine

DJANGO_FREE_PACKAGES = ["protocol", "tasks", "artifacts", "worker", "client"]
FORBIDDEN = ("django", "rest_framework", "channels", "celery")

PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted(sys.modules)))
"""


def django_free_modules() -> list[str]:
    """Every non-test module of the Django-free packages that exist so far."""
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
    return names


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
