"""
Debian's `debusine` client 0.16 (from trixie-backports, run in a trixie root: it needs Python
3.13) against our server.

Each test runs the command line a user would type, with the client configured through its
usual config file: work requests (create, show, list, the `workflow list` filters), artifacts
(create with uploads, show, download: 0.16 checks every downloaded file's size and hashes)
and errors, which 0.16 turns into a one-line message only when the problem body holds the keys
it knows.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import requests

from debusine.testing.reference_v016 import V016Root
from tests.compat.conftest import V016Cli

pytestmark = pytest.mark.compat

MISSING_ID = 987654321


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_root_holds_debusine_016(installed_v016: V016Root, tmp_path: Path) -> None:
    result = installed_v016.run_client("--version", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert installed_v016.version.startswith("0.16")


# Work requests


def test_create_show_and_list_a_noop(cli: V016Cli) -> None:
    # 0.16 prints the new work request itself.
    created = cli.ok("work-request", "create", "--yaml", "noop", stdin="result: true\n").yaml()
    assert created["task_name"] == "noop", created
    assert created["status"] == "pending"
    work_request_id = created["id"]

    shown = cli.ok("work-request", "show", "--yaml", str(work_request_id)).yaml()
    assert shown["id"] == work_request_id
    assert shown["task_name"] == "noop"
    assert shown["status"] == "pending"
    assert shown["workspace"] == "System"
    # The rich output dereferences links.webui_self.
    rich = cli.ok("work-request", "show", str(work_request_id))
    assert f"/debusine/System/work-request/{work_request_id}/" in rich.stdout

    listed = cli.ok("work-request", "list", "--yaml").yaml()
    assert work_request_id in [entry["id"] for entry in listed]
    cli.ok("work-request", "list")


def test_workflow_list_uses_the_new_filters(cli: V016Cli) -> None:
    noop = cli.ok("work-request", "create", "--yaml", "noop", stdin="result: true\n").yaml()
    listed = cli.ok("workflow", "list", "--yaml").yaml() or []
    # `?task_type=Workflow&root_only=true`: a noop is no workflow.
    assert noop["id"] not in [entry["id"] for entry in listed]
    assert all(entry["task_type"] == "Workflow" for entry in listed)

    # The other filters 0.16 servers offer, over HTTP.
    response = requests.get(
        f"{cli.server.api_url}/1.0/work-request/",
        params={"ids": str(noop["id"]), "status": "pending"},
        headers={"Token": cli.server.token, "X-Debusine-Scope": "debusine"},
        timeout=30,
    )
    assert [entry["id"] for entry in response.json()["results"]] == [noop["id"]]


def test_an_error_is_one_line_not_a_traceback(cli: V016Cli) -> None:
    run = cli.run("work-request", "show", "--yaml", str(MISSING_ID))
    assert run.returncode != 0, run.describe()
    assert "Traceback" not in run.stderr + run.stdout, run.describe()
    assert str(MISSING_ID) in run.stderr + run.stdout, run.describe()

    bad = cli.run("work-request", "create", "--yaml", "noop", stdin="result: 3\nbogus: 1\n")
    assert "Traceback" not in bad.stderr + bad.stdout, bad.describe()
    assert "bogus" in bad.stderr + bad.stdout, bad.describe()


# Artifacts


def test_upload_show_and_download_with_hashes_checked(cli: V016Cli, tmp_path: Path) -> None:
    base = tmp_path / "files"
    (base / "sub").mkdir(parents=True)
    contents = {"a.txt": os.urandom(1000), "sub/b.bin": os.urandom(70_000)}
    for relative, data in contents.items():
        (base / relative).write_bytes(data)
    base.chmod(0o755)

    created = cli.ok(
        "artifact",
        "create",
        "--yaml",
        "debusine:test",
        "--upload-base-directory",
        str(base),
        "--upload",
        *contents,
    ).yaml()
    assert created["result"] == "success", created
    artifact_id = created["artifact_id"]

    shown = cli.ok("artifact", "show", "--yaml", str(artifact_id)).yaml()
    assert shown["id"] == artifact_id
    assert shown["scope"] == "debusine"
    assert shown["files_to_upload"] == []
    assert {path: entry["checksums"]["sha256"] for path, entry in shown["files"].items()} == {
        path: hashlib.sha256(data).hexdigest() for path, data in contents.items()
    }
    cli.ok("artifact", "show", str(artifact_id))

    target = tmp_path / "download"
    target.mkdir(mode=0o777)
    cli.ok("artifact", "download", "--target-directory", str(target), str(artifact_id))
    for relative, data in contents.items():
        assert (target / relative).read_bytes() == data

    # The workspace-scoped form 0.16 tasks use.
    response = requests.get(
        f"{cli.server.api_url}/1.0/artifact/System/{artifact_id}/",
        headers={"Token": cli.server.token, "X-Debusine-Scope": "debusine"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.json()["id"] == artifact_id
    assert response.json()["links"]["webui_self"] == shown["url"]


def test_missing_artifact_is_reported_cleanly(cli: V016Cli) -> None:
    run = cli.run("artifact", "show", "--yaml", str(MISSING_ID))
    assert run.returncode != 0, run.describe()
    assert "Traceback" not in run.stderr + run.stdout, run.describe()
