"""
The real Debusine 0.11.3 client (Debian's `debusine` command) against our server.

Each test runs the command line a user would type, with the client configured through its
usual config file, and checks what it prints and what it leaves on disk: work requests
(create, show, list, priority, retry), artifacts (create with uploads, show, download as files
or as a tarball, relations) and Debian package imports. 0.11.3 has no `abort-work-request`
command, so the one abort a retry needs is made over plain HTTP.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.compat.conftest import ReferenceCli, write_client_config
from tests.compat.debian_packages import build_deb, build_upload
from tests.integration.conftest import LiveServer

pytestmark = pytest.mark.compat

MISSING_ID = 987654321


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_random_files(directory: Path, sizes: dict[str, int]) -> dict[str, Path]:
    """Files of random content (so no earlier upload has them), keyed by relative path."""
    files = {}
    for relative, size in sizes.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
        files[relative] = path
    return files


def create_noop(cli: ReferenceCli, task_data: str = "result: true\n") -> int:
    output = cli.ok("create-work-request", "noop", stdin=task_data).yaml()
    assert output["result"] == "success", output
    work_request_id = output["work_request_id"]
    assert isinstance(work_request_id, int)
    return work_request_id


def create_artifact(cli: ReferenceCli, base: Path, *relative_paths: str) -> dict[str, Any]:
    """`create-artifact debusine:test` uploading `relative_paths` under `base`."""
    run = cli.ok(
        "create-artifact",
        "debusine:test",
        "--upload-base-directory",
        str(base),
        "--upload",
        *relative_paths,
    )
    output: dict[str, Any] = run.yaml()
    assert output["result"] == "success", run.describe()
    return output


def newest_work_request_id(server: LiveServer) -> int | None:
    """Id of the newest work request the test user sees, read over HTTP."""
    response = requests.get(
        f"{server.api_url}/1.0/work-request/",
        headers={"Token": server.token, "X-Debusine-Scope": "debusine"},
        timeout=30,
    )
    response.raise_for_status()
    results = response.json()["results"]
    return max((entry["id"] for entry in results), default=None)


def abort_over_http(server: LiveServer, work_request_id: int) -> None:
    """Abort a work request: the 0.11.3 client has no command for it."""
    response = requests.post(
        f"{server.api_url}/1.0/work-request/{work_request_id}/abort/",
        json={},
        headers={"Token": server.token, "X-Debusine-Scope": "debusine"},
        timeout=30,
    )
    assert response.status_code == 200, response.text


def assert_same_tree(downloaded: Path, expected: dict[str, Path]) -> None:
    """`downloaded` holds exactly the `expected` files (by relative path), byte for byte."""
    found = sorted(
        path.relative_to(downloaded).as_posix() for path in downloaded.rglob("*") if path.is_file()
    )
    assert found == sorted(expected)
    for relative, original in expected.items():
        assert (downloaded / relative).read_bytes() == original.read_bytes(), relative


# Work requests


def test_create_noop_then_show_and_list_it(reference_cli: ReferenceCli) -> None:
    output = reference_cli.ok(
        "create-work-request", "noop", "--workspace", "System", stdin="result: true\n"
    ).yaml()

    assert output["result"] == "success"
    assert reference_cli.server.api_url in output["message"]
    work_request_id = output["work_request_id"]
    shown = reference_cli.ok("show-work-request", str(work_request_id)).yaml()
    assert shown["id"] == work_request_id
    assert shown["status"] == "pending"
    assert shown["result"] == ""
    assert shown["task_type"] == "Worker"
    assert shown["task_name"] == "noop"
    assert shown["task_data"] == {"result": True}
    assert shown["workspace"] == "System"
    assert shown["artifacts"] == []
    assert shown["worker"] is None
    listed = reference_cli.ok("list-work-requests").yaml()["results"]
    assert work_request_id in [entry["id"] for entry in listed]


def test_create_noop_with_unknown_task_data_key_prints_the_problem(
    reference_cli: ReferenceCli,
) -> None:
    newest_before = newest_work_request_id(reference_cli.server)

    run = reference_cli.ok("create-work-request", "noop", stdin="foo: bar\n")

    # The 0.11.3 client reports the problem on stdout and still exits with 0.
    output = run.yaml()
    assert output["result"] == "failure"
    assert output["error"]["title"] == "Cannot create work request"
    assert "foo" in output["error"]["detail"]
    assert "work_request_id" not in output
    assert newest_work_request_id(reference_cli.server) == newest_before


def test_create_work_request_with_unknown_token_is_refused(
    reference_cli: ReferenceCli, tmp_path: Path
) -> None:
    stranger_home = tmp_path / "stranger"
    write_client_config(stranger_home, api_url=reference_cli.server.api_url, token="0" * 64)
    stranger = ReferenceCli(reference_cli.client, reference_cli.server, stranger_home)

    output = stranger.ok("create-work-request", "noop", stdin="result: true\n").yaml()

    assert output["result"] == "failure"
    # Refused as an unknown token (401 problem), not served as anonymous.
    assert output["error"]["title"] == "Invalid token"
    assert "not known" in output["error"]["detail"]


def test_owner_lowers_priority_but_cannot_raise_it(reference_cli: ReferenceCli) -> None:
    work_request_id = str(create_noop(reference_cli))

    reference_cli.ok("manage-work-request", work_request_id, "--set-priority-adjustment", "-5")
    raised = reference_cli.run(
        "manage-work-request", work_request_id, "--set-priority-adjustment", "5"
    )

    assert raised.returncode != 0
    assert "Permission denied" in raised.stderr
    shown = reference_cli.ok("show-work-request", work_request_id).yaml()
    assert shown["priority_adjustment"] == -5


def test_retry_refuses_a_pending_work_request_and_retries_an_aborted_one(
    reference_cli: ReferenceCli,
) -> None:
    work_request_id = create_noop(reference_cli)

    refused = reference_cli.run("retry-work-request", str(work_request_id))
    assert refused.returncode != 0
    assert "Cannot retry work request" in refused.stderr

    abort_over_http(reference_cli.server, work_request_id)
    reference_cli.ok("retry-work-request", str(work_request_id))

    listed = reference_cli.ok("list-work-requests").yaml()["results"]
    by_id = {entry["id"]: entry for entry in listed}
    assert by_id[work_request_id]["status"] == "aborted"
    retry_id = max(by_id)
    assert retry_id > work_request_id
    assert by_id[retry_id]["status"] == "pending"
    assert by_id[retry_id]["task_data"] == {"result": True}


def test_missing_work_request_and_artifact_are_reported(reference_cli: ReferenceCli) -> None:
    work_request = reference_cli.run("show-work-request", str(MISSING_ID))
    artifact = reference_cli.run("show-artifact", str(MISSING_ID))

    assert work_request.returncode != 0
    assert f"Work request {MISSING_ID} not found" in work_request.stderr
    assert artifact.returncode != 0
    assert f"Artifact {MISSING_ID} not found" in artifact.stderr


def test_unknown_scope_is_not_found(reference_cli: ReferenceCli) -> None:
    run = reference_cli.run("--scope", "no-such-scope", "list-work-requests")

    assert run.returncode == 3
    assert "Not found" in run.stderr + run.stdout


# Artifacts

ARTIFACT_LAYOUTS = {
    # One file: the client downloads it from its own URL.
    "one-file": {"hello.txt": 6},
    # Several files: the client downloads the tar.gz and unpacks it; one is in a subdirectory.
    "two-files": {"top.txt": 100, "sub/inner.bin": 3000},
    # A few MiB: uploaded in one chunk, read back through the direct file URL.
    "few-mib": {"large.bin": 5 * 1024 * 1024 + 17},
    # Characters that must be quoted in the upload and download URLs.
    "quoted-name": {"with space+plus.txt": 42},
}


@pytest.mark.parametrize("layout", ARTIFACT_LAYOUTS.values(), ids=ARTIFACT_LAYOUTS.keys())
def test_create_show_and_download_artifact(
    reference_cli: ReferenceCli, tmp_path: Path, layout: dict[str, int]
) -> None:
    files = write_random_files(tmp_path / "upload", layout)

    created = create_artifact(reference_cli, tmp_path / "upload", *files)
    artifact_id = str(created["artifact_id"])

    assert created["files_to_upload"] == len(files)
    shown = reference_cli.ok("show-artifact", artifact_id).yaml()
    assert shown["category"] == "debusine:test"
    assert shown["workspace"] == "System"
    assert shown["files_to_upload"] == []
    assert {path: entry["size"] for path, entry in shown["files"].items()} == layout
    assert {path: entry["checksums"]["sha256"] for path, entry in shown["files"].items()} == {
        relative: sha256_of(path) for relative, path in files.items()
    }
    target = tmp_path / "download"
    target.mkdir()
    download = reference_cli.ok(
        "download-artifact", artifact_id, "--target-directory", str(target)
    )
    assert_same_tree(target, files)
    # Which of the two download paths the client took.
    expected_path = "files into" if len(files) == 1 else "uncompressing into"
    assert expected_path in download.stdout + download.stderr


def test_download_artifact_as_tarball(reference_cli: ReferenceCli, tmp_path: Path) -> None:
    files = write_random_files(tmp_path / "upload", {"a.txt": 10, "dir/b.bin": 2000})
    artifact_id = create_artifact(reference_cli, tmp_path / "upload", *files)["artifact_id"]
    target = tmp_path / "download"
    target.mkdir()

    reference_cli.ok("download-artifact", str(artifact_id), "--tarball", cwd=target)

    with tarfile.open(target / f"artifact-{artifact_id}.tar.gz") as archive:
        contents = {
            member.name: archive.extractfile(member).read()  # type: ignore[union-attr]
            for member in archive.getmembers()
            if member.isfile()
        }
    assert contents == {relative: path.read_bytes() for relative, path in files.items()}


def test_files_the_server_already_has_are_not_uploaded_again(
    reference_cli: ReferenceCli, tmp_path: Path
) -> None:
    files = write_random_files(tmp_path, {"known.bin": 500})
    create_artifact(reference_cli, tmp_path, *files)

    again = create_artifact(reference_cli, tmp_path, *files)

    assert again["files_to_upload"] == 0
    target = tmp_path / "download"
    target.mkdir()
    reference_cli.ok(
        "download-artifact", str(again["artifact_id"]), "--target-directory", str(target)
    )
    assert_same_tree(target, files)


def test_create_artifact_in_unknown_workspace_prints_the_problem(
    reference_cli: ReferenceCli, tmp_path: Path
) -> None:
    files = write_random_files(tmp_path, {"unused.txt": 5})

    run = reference_cli.ok(
        "create-artifact",
        "debusine:test",
        "--workspace",
        "no-such-workspace",
        "--upload-base-directory",
        str(tmp_path),
        "--upload",
        *files,
    )

    output = run.yaml()
    assert output["result"] == "failure"
    assert "no-such-workspace" in output["error"]["title"]
    assert "Uploading" not in run.stderr


def test_show_relations_of_artifact_without_relations(
    reference_cli: ReferenceCli, tmp_path: Path
) -> None:
    files = write_random_files(tmp_path, {"lonely.txt": 8})
    artifact_id = str(create_artifact(reference_cli, tmp_path, *files)["artifact_id"])

    assert reference_cli.ok("show-artifact-relations", artifact_id).yaml() == []
    assert reference_cli.ok("show-artifact-relations", artifact_id, "--reverse").yaml() == []


# Debian packages


def test_import_binary_package(reference_cli: ReferenceCli, tmp_path: Path) -> None:
    deb = build_deb(tmp_path)

    output = reference_cli.ok("import-debian-artifact", str(deb)).yaml()

    assert output["result"] == "success"
    shown = reference_cli.ok("show-artifact", str(output["artifact_id"])).yaml()
    assert shown["category"] == "debian:binary-package"
    assert shown["data"]["deb_fields"]["Package"] == "hello-compat"
    assert shown["files"][deb.name]["checksums"]["sha256"] == sha256_of(deb)


def test_import_upload_creates_linked_artifacts(
    reference_cli: ReferenceCli, tmp_path: Path
) -> None:
    upload = build_upload(tmp_path)

    run = reference_cli.ok("import-debian-artifact", str(upload.changes))

    output = run.yaml()
    assert output["result"] == "success", run.describe()
    primary = output["artifact_id"]
    related = [entry["artifact_id"] for entry in output["extends"]]
    assert [entry["artifact_id"] for entry in output["relates_to"]] == related
    # The upload, then the source package, then the binary packages (one .deb, one per arch).
    assert len(related) == 3
    relations = reference_cli.ok("show-artifact-relations", str(primary)).yaml()
    assert sorted((entry["target"], entry["type"]) for entry in relations) == sorted(
        (target, kind) for target in related for kind in ("extends", "relates-to")
    )
    source_id = related[0]
    reverse = reference_cli.ok("show-artifact-relations", str(source_id), "--reverse").yaml()
    assert sorted((entry["artifact"], entry["type"]) for entry in reverse) == [
        (primary, "extends"),
        (primary, "relates-to"),
    ]
    source = reference_cli.ok("show-artifact", str(source_id)).yaml()
    assert source["category"] == "debian:source-package"
    target = tmp_path / "download"
    target.mkdir()
    reference_cli.ok("download-artifact", str(source_id), "--target-directory", str(target))
    assert_same_tree(target, {upload.dsc.name: upload.dsc, upload.tarball.name: upload.tarball})
