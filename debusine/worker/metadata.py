"""
The dynamic metadata a worker reports: what the machine is and which tasks it can run.

The server replaces its copy of this flat object on every `PUT /1.0/worker/dynamic-metadata/`
and the scheduler matches work requests against it (`system:architectures`,
`<task>:version`, ...). Gathering runs host tools, so callers run it off the event loop.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from typing import Any

from debusine.tasks import task_availability_metadata, task_version_metadata
from debusine.tasks.executors.unshare import unshare_available

logger = logging.getLogger(__name__)

#: Longest a host tool may take before its answer is treated as unknown.
TOOL_TIMEOUT = 60


def _tool_output(argv: list[str]) -> str | None:
    """Standard output of `argv` if the tool exists and succeeds, else None (logged)."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False
        )
    except (OSError, subprocess.SubprocessError) as error:
        logger.warning("cannot run %s: %s", " ".join(argv), error)
        return None
    if result.returncode != 0:
        logger.warning(
            "%s exited with %d: %s", " ".join(argv), result.returncode, result.stderr.strip()
        )
        return None
    return result.stdout


def host_architecture() -> str | None:
    """The Debian architecture of this machine (`dpkg --print-architecture`), if known."""
    output = _tool_output(["dpkg", "--print-architecture"])
    return output.strip() or None if output is not None else None


def supported_architectures(host: str | None) -> list[str]:
    """
    The architectures this machine can run: `arch-test -n` when it is installed, else just
    the host architecture (a missing arch-test must not stop a worker from reporting).
    """
    output = _tool_output(["arch-test", "-n"])
    if output is not None:
        architectures = output.split()
        if architectures:
            return architectures
    return [host] if host else []


def total_physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def dynamic_metadata(worker_type: str = "external") -> dict[str, Any]:
    """The full dynamic metadata object of this worker."""
    host = host_architecture()
    metadata: dict[str, Any] = {
        "system:cpu_count": os.cpu_count() or 1,
        "system:total_physical_memory": total_physical_memory(),
        "system:worker_type": worker_type,
    }
    if host is not None:
        metadata["system:host_architecture"] = host
    metadata["system:architectures"] = supported_architectures(host)
    metadata["executor:unshare:available"] = unshare_available()
    metadata.update(task_version_metadata())
    metadata.update(task_availability_metadata())
    return metadata
