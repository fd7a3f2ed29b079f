"""
Run the test suite with the services it needs: the bootstrap behind `make test`.

`python -m debusine.testing.services [pytest arguments]` makes sure the tools the
tests call exist (curl, for the HTTP protocol tests; pg_dump and pg_restore, for the
disaster-recovery test), then finds PostgreSQL and Redis the way `make run` does (configured
URLs, else 127.0.0.1:5432 / 6379, else embedded ones started for this run in a temporary
directory), points the tests at them through DEBUSINE_DATABASE_URL / DEBUSINE_REDIS_URL, and
runs pytest. pytest-django then creates one `test_<name>_gwN` database per xdist worker.
Embedded services are stopped afterwards.

The exit status is pytest's, except that "no tests collected" (pytest's 5) is reported as a
failure in its own words: a suite that runs nothing must never pass CI silently. For the same
reason pytest runs with the skip guard (`debusine.testing.skip_guard`, `--fail-on-skip`): a
test skipped for a reason not listed in `allowed_skips` fails the run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import NoReturn

import psycopg

from debusine.testing.embedded import (
    EmbeddedServiceError,
    Services,
    drop_database,
    provide_services,
)

PYTEST_NO_TESTS_COLLECTED = 5
#: pytest arguments that make an unexpected skip fail the run.
SKIP_GUARD = ["-p", "debusine.testing.skip_guard", "--fail-on-skip"]
# Tools the tests run as subprocesses, with the Debian package providing each.
REQUIRED_TOOLS = {
    # The reference debusine-worker (tests/compat) crashes on its first metadata without it.
    "arch-test": "arch-test",
    "curl": "curl",
    "dpkg-buildpackage": "dpkg-dev",
    "pg_dump": "postgresql-client",
    "pg_restore": "postgresql-client",
    # The Debian tasks and their tests: the worker user's namespaces need newuidmap and
    # newgidmap, environments are zstd tarballs.
    "autopkgtest": "autopkgtest",
    "lintian": "lintian",
    "mmdebstrap": "mmdebstrap",
    "newuidmap": "uidmap",
    "piuparts": "piuparts",
    # tests/integration/test_prometheus.py scrapes a server with Debian's Prometheus.
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "sbuild": "sbuild",
    "zstd": "zstd",
    # tests/deploy: the Ansible roles, run and linted with Debian's tools; the flat APT
    # repository of the built packages.
    "ansible-playbook": "ansible",
    "ansible-lint": "ansible-lint",
    "apt-ftparchive": "apt-utils",
    # The signing service: its tools, the SoftHSM2 token of the PKCS#11 tests, and what builds
    # the EFI binary they sign.
    "gpg": "gnupg",
    "gpgv": "gpgv",
    "sbsign": "sbsigntool",
    "sbverify": "sbsigntool",
    "softhsm2-util": "softhsm2",
    "pkcs11-tool": "opensc",
    "debsign": "devscripts",
    "dscverify": "devscripts",
    "gcc": "gcc",
    "objcopy": "binutils",
    # Kernel module signatures are read back by modinfo.
    "modinfo": "kmod",
    # The web UI's browser tests (Selenium driving Debian's Chromium).
    "chromium": "chromium",
    "chromedriver": "chromium-driver",
}
# Libraries the tests load, with the Debian package providing each.
REQUIRED_FILES = {
    # sbsign --engine pkcs11 (UEFI signing with an HSM key).
    "/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so": "libengine-pkcs11-openssl",
    "/usr/lib/softhsm/libsofthsm2.so": "softhsm2",
    # The kernel's own sign-file, which kernel module signatures are compared with.
    "/usr/lib/linux-kbuild-6.1/scripts/sign-file": "linux-kbuild-6.1",
}
# pytest-django derives the per-worker test databases from this name (test_<name>_gwN): one
# name per run keeps two runs on one PostgreSQL (CI and a developer, two checkouts) apart.
TEST_DATABASE_NAME = f"debusine_run_{os.getpid()}"


#: Debian's Python, which runs the test workers of other users.
SYSTEM_PYTHON = Path("/usr/bin/python3")


def _has_module(python: Path, module: str) -> bool:
    command = [str(python), "-c", f"import {module}"]
    return subprocess.run(command, capture_output=True, check=False).returncode == 0


def ensure_tools() -> None:
    """Install missing test tools with apt-get (we run as root on CI), or say what is missing."""
    missing = sorted(
        {package for tool, package in REQUIRED_TOOLS.items() if shutil.which(tool) is None}
        | {package for path, package in REQUIRED_FILES.items() if not Path(path).exists()}
    )
    # Workers of another user run in a virtualenv of Debian's Python (debusine.testing.worker).
    if SYSTEM_PYTHON.exists() and not _has_module(SYSTEM_PYTHON, "ensurepip"):
        missing.append("python3-venv")
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        print(f"make test: please install {' '.join(missing)}", file=sys.stderr)
        return
    print(f"Installing {' '.join(missing)} with apt-get...", flush=True)
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=environment)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        check=True,
        env=environment,
    )


def ensure_worker_user() -> None:
    """
    As root, create the unprivileged user the Debian tasks' tests run tools as (sbuild refuses
    to build as root in unshare mode), with subordinate ID ranges; the tests that need it
    would otherwise be skipped.
    """
    if os.geteuid() != 0:
        return
    from debusine.testing.worker import ensure_worker_user as ensure

    ensure()


def _terminate(signum: int, _frame: FrameType | None) -> NoReturn:
    raise SystemExit(128 + signum)


def run_tests(pytest_args: list[str]) -> int:
    """Provide the services, run pytest with `pytest_args`, stop the services."""
    from debusine.server.project.settings_loader import declared_settings

    configured = declared_settings()
    ensure_tools()
    ensure_worker_user()
    # SIGTERM (CI timeouts) must stop embedded services too, like Ctrl-C does.
    signal.signal(signal.SIGTERM, _terminate)
    work_dir = Path(tempfile.mkdtemp(prefix="debusine-tests-"))
    services: Services | None = None
    try:
        services = provide_services(
            work_dir / "services",
            database_name=TEST_DATABASE_NAME,
            mode=str(configured["DEBUSINE_EMBEDDED_SERVICES"]),
            configured_database_url=str(configured["DEBUSINE_DATABASE_URL"]),
            configured_redis_url=str(configured["DEBUSINE_REDIS_URL"]),
        )
        for description in services.descriptions:
            print(description, flush=True)
        environment = {
            **os.environ,
            "DEBUSINE_DATABASE_URL": services.database_url,
            "DEBUSINE_REDIS_URL": services.redis_url,
            # Celery queues and Channels groups of this run, apart from any other user of Redis.
            "DEBUSINE_REDIS_KEY_PREFIX": TEST_DATABASE_NAME,
            # Tests never touch the developer's `.data/`.
            "DEBUSINE_DATA_DIR": str(work_dir / "data"),
        }
        command = [sys.executable, "-m", "pytest", *SKIP_GUARD, *pytest_args]
        code = subprocess.run(command, env=environment, check=False).returncode
    except EmbeddedServiceError as exc:
        print(f"make test: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if services is not None:
            if not configured["DEBUSINE_DATABASE_URL"] or services.embedded_postgres:
                # Cleanup only: a database left behind must not hide the tests' result.
                with contextlib.suppress(psycopg.Error):
                    drop_database(services.database_url)
            services.stop()
        shutil.rmtree(work_dir, ignore_errors=True)
    if code == PYTEST_NO_TESTS_COLLECTED:
        print("make test: pytest collected no tests; that is a failure.", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Entry point: every argument goes to pytest."""
    return run_tests(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
