"""
The Debian packages, installed by apt into a clean Debian 12 root, serve Debian's own client.

One root for the main test (building and bootstrapping take minutes): our packages and
nginx, PostgreSQL and Redis installed by apt, the units' `ExecStart` lines running (see
tests/deploy/debian_root.py). Debian's `debusine` 0.11.3 client, outside the root, talks to the
shipped nginx virtual host over HTTPS (a test CA): it runs a noop work request, which the
packaged worker (in the root, through the same nginx, websocket included) executes, and uploads
and downloads an artifact, whose file nginx sends itself (X-Accel-Redirect). When the root is
finished, its stop script has removed, reinstalled and purged the packages: the data survived.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from debusine.testing.reference_client import (
    ReferenceClient,
    ReferenceClientError,
    reference_client,
)
from tests.compat.conftest import write_client_config
from tests.deploy.debian_root import UNITS, DebianRoot
from tests.deploy.packages import PACKAGES, built_packages

pytestmark = [pytest.mark.slow, pytest.mark.integration]

WORK_REQUEST_TIMEOUT = 300.0


@pytest.fixture(scope="module")
def debs() -> Path:
    return built_packages()


@pytest.fixture
def client() -> ReferenceClient:
    try:
        return reference_client()
    except ReferenceClientError as error:
        pytest.fail(f"cannot get the reference debusine client: {error}", pytrace=False)


@pytest.fixture
def root(debs: Path) -> Iterator[DebianRoot]:
    # Not under pytest's temporary directory: the unprivileged bootstrap must reach it.
    base = Path(tempfile.mkdtemp(prefix="debusine-debian-root-"))
    base.chmod(0o755)
    running = DebianRoot(debs=debs, shared=base / "shared")
    try:
        running.start()
        yield running
    finally:
        running.finish()
        shutil.rmtree(base, ignore_errors=True)


Cli = Callable[..., Any]


def reference_cli(
    root: DebianRoot, client: ReferenceClient, home: Path, monkeypatch: pytest.MonkeyPatch
) -> Cli:
    """Run the reference client (configured for the root's nginx) and parse its YAML."""
    write_client_config(home, api_url=root.api_url, token=root.token())
    # The client's requests trust the test CA; nothing else is changed.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(root.ca))

    def run(*args: str, stdin: str = "") -> Any:
        result = client.run(*args, home=home, stdin=stdin, cwd=home, timeout=300)
        assert result.returncode == 0, (result.stdout, result.stderr, root.diagnostics())
        return yaml.safe_load(result.stdout)

    return run


def test_every_package_was_built(debs: Path) -> None:
    assert sorted(path.name.split("_")[0] for path in debs.glob("*.deb")) == sorted(PACKAGES)


def test_packages_in_a_clean_debian_root_serve_the_reference_client(
    root: DebianRoot, client: ReferenceClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One root for every step: bootstrapping it takes minutes."""
    maintainer_scripts_made_users_directories_and_enabled_units(root)
    the_installed_units_are_ours(root)
    cli = reference_cli(root, client, tmp_path / "home", monkeypatch)
    noop_runs_on_the_packaged_worker(cli)
    upload_and_download_through_nginx(cli, root, tmp_path)
    removal_reinstallation_and_purge_keep_the_data(root)


def maintainer_scripts_made_users_directories_and_enabled_units(root: DebianRoot) -> None:
    facts = (root.out / "facts").read_text()
    for user in ("debusine-server", "debusine-worker", "debusine-signing"):
        assert f"\n{user}:" in f"\n{facts}"
    assert "/etc/subuid:debusine-worker:" in facts
    assert "/etc/debusine/server root:debusine-server 750" in facts
    assert "/etc/debusine/server/settings.toml root:debusine-server 640" in facts
    assert "/var/lib/debusine/server debusine-server:debusine-server 751" in facts
    # nginx (www-data) reads what the server stores (X-Accel-Redirect), nobody else.
    assert "/var/lib/debusine/server/store debusine-server:www-data 2750" in facts
    assert "/var/lib/debusine/server/secret-key debusine-server:debusine-server 600" in facts
    assert "/etc/debusine/worker debusine-worker:debusine-worker 750" in facts
    assert "/etc/debusine/signing debusine-signing:debusine-signing 700" in facts
    enabled = (root.out / "enabled").read_text().split()
    assert enabled == [
        "debusine-server-delete-expired.timer",
        "debusine-server-migrate.service",
        "debusine-server-provisioner.service",
        "debusine-server-scheduler.service",
        "debusine-server-vacuum-storage.timer",
        "debusine-server.service",
        "debusine-signing-migrate.service",
        "debusine-signing.service",
        "debusine-worker.service",
    ]


def the_installed_units_are_ours(root: DebianRoot) -> None:
    shipped = sorted(path.name for path in UNITS.glob("*.*"))
    installed = sorted(path.name for path in root.out.glob("debusine*.*") if path.is_file())
    assert installed == shipped
    _, mismatch, errors = filecmp.cmpfiles(UNITS, root.out, shipped, shallow=False)
    assert (mismatch, errors) == ([], [])


def noop_runs_on_the_packaged_worker(cli: Cli) -> None:
    created = cli("create-work-request", "noop", stdin="result: true\n")
    assert created["result"] == "success", created
    work_request_id = str(created["work_request_id"])
    deadline = time.monotonic() + WORK_REQUEST_TIMEOUT
    shown = cli("show-work-request", work_request_id)
    while shown["status"] != "completed" and time.monotonic() < deadline:
        time.sleep(1)
        shown = cli("show-work-request", work_request_id)
    assert (shown["status"], shown["result"]) == ("completed", "success"), shown
    assert shown["worker"] is not None


def upload_and_download_through_nginx(cli: Cli, root: DebianRoot, tmp_path: Path) -> None:
    upload = tmp_path / "upload"
    upload.mkdir()
    contents = os.urandom(3 * 1024 * 1024 + 7)
    (upload / "data.bin").write_bytes(contents)
    (upload / "notes.txt").write_text("packaged\n")
    created = cli(
        "create-artifact",
        "debusine:test",
        "--upload-base-directory",
        str(upload),
        "--upload",
        "data.bin",
        "notes.txt",
    )
    assert created["result"] == "success", created
    artifact_id = str(created["artifact_id"])

    target = tmp_path / "download"
    target.mkdir()
    cli("download-artifact", artifact_id, "--target-directory", str(target))
    assert (target / "data.bin").read_bytes() == contents
    assert (target / "notes.txt").read_text() == "packaged\n"

    # The file itself is sent by nginx (X-Accel-Redirect), ranges included.
    shown = requests.get(
        f"{root.api_url}/1.0/artifact/{artifact_id}/",
        headers={"Token": root.token()},
        verify=str(root.ca),
        timeout=60,
    )
    assert shown.status_code == 200, shown.text
    url = shown.json()["files"]["data.bin"]["url"]
    assert url.startswith(f"https://localhost:{root.https_port}/")
    headers = {"Token": root.token(), "Range": "bytes=1000-1999"}
    response = requests.get(url, headers=headers, verify=str(root.ca), timeout=60)
    assert response.status_code == 206
    assert response.content == contents[1000:2000]
    assert response.headers["Server"].startswith("nginx")
    assert "X-Accel-Redirect" not in response.headers


def removal_reinstallation_and_purge_keep_the_data(root: DebianRoot) -> None:
    assert root.finish() == 0, root.diagnostics()
    installed = (root.out / "state-installed").read_text()
    assert "/var/lib/debusine/server/store/" in installed  # the upload above
    assert (root.out / "state-removed").read_text() == installed
    assert (root.out / "state-reinstalled").read_text() == installed
    stored = [line for line in installed.splitlines() if "/store/" in line]
    purged = (root.out / "state-purged").read_text()
    assert all(line in purged for line in stored)
    assert "cannot access '/etc/debusine/worker'" in purged
    assert "cannot access '/usr/lib/debusine'" in purged
