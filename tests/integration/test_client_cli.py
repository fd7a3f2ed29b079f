"""
The `debusine` command against a real server process (gunicorn + uvicorn, real PostgreSQL):
every command's success path and its main error paths.
"""

from __future__ import annotations

import hashlib
import os
import pty
import subprocess
import tarfile
from pathlib import Path

import psycopg
import pytest

from debusine.client.tests.debian_build import build_upload
from debusine.testing.processes import free_port
from tests.integration.client_cli import DEBUSINE, Cli, configured_cli
from tests.integration.conftest import LiveServer

pytestmark = pytest.mark.integration


@pytest.fixture
def cli(debusine_server: LiveServer, tmp_path: Path) -> Cli:
    return configured_cli(tmp_path / "home", debusine_server.api_url, debusine_server.token)


def write_files(directory: Path, sizes: dict[str, int]) -> list[Path]:
    paths = []
    for index, (name, size) in enumerate(sizes.items()):
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes((index + offset) % 251 for offset in range(size)))
        paths.append(path)
    return paths


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- Configuration --------------------------------------------------------------------------


def test_setup_writes_a_private_config_file(cli: Cli, debusine_server: LiveServer) -> None:
    assert cli.config_file.stat().st_mode & 0o777 == 0o600
    text = cli.config_file.read_text()
    assert "[server:test]" in text
    assert f"api-url = {debusine_server.api_url}" in text
    assert "default-server = test" in text


def test_config_readable_by_others_is_refused(cli: Cli) -> None:
    cli.config_file.chmod(0o644)

    run = cli.fails(3, "list-work-requests")

    assert "chmod 600" in run.stderr
    assert run.stdout == ""


def test_unknown_server_name(cli: Cli) -> None:
    run = cli.fails(3, "--server", "elsewhere", "list-work-requests")
    assert "server 'elsewhere' is not configured" in run.stderr


def test_server_by_fqdn_and_scope(cli: Cli) -> None:
    assert isinstance(cli.ok("--server", "127.0.0.1/debusine", "list-work-requests").yaml(), list)
    cli.fails(3, "--server", "127.0.0.1/other-scope", "list-work-requests")


def test_unknown_key_in_config_is_refused(cli: Cli) -> None:
    cli.config_file.write_text(
        cli.config_file.read_text()
        + "\n[server:x]\napi-url = http://x/api\nscope = s\nuser = me\n"
    )
    run = cli.fails(3, "--server", "x", "list-work-requests")
    assert "unknown key(s) user" in run.stderr


def test_unknown_scope_is_not_found(cli: Cli) -> None:
    run = cli.fails(3, "--scope", "no-such-scope", "list-work-requests")
    assert "Not found" in run.stderr
    assert "no-such-scope" in run.stderr


def test_server_down(tmp_path: Path) -> None:
    cli = configured_cli(tmp_path / "home", f"http://127.0.0.1:{free_port()}/api", "0" * 64)

    run = cli.fails(3, "show-work-request", "1")

    assert "cannot connect to" in run.stderr
    assert "Connection refused" in run.stderr


def test_bad_arguments_exit_with_2(cli: Cli) -> None:
    assert cli.run("show-work-request", "not-a-number").returncode == 2
    assert cli.run("no-such-command").returncode == 2
    run = cli.run("create-work-request", "noop", stdin="")
    assert run.returncode == 2
    assert "empty" in run.stderr


def test_help_lists_every_command() -> None:
    from debusine.client.cli import build_parser

    help_text = build_parser().format_help()
    for command in (
        "setup",
        "list-work-requests",
        "show-work-request",
        "create-work-request",
        "manage-work-request",
        "retry-work-request",
        "abort-work-request",
        "manual-unblock",
        "create-workflow-template",
        "create-workflow",
        "list-workflows",
        "show-workflow",
        "retry-workflow",
        "abort-workflow",
        "create-artifact",
        "import-debian-artifact",
        "download-artifact",
        "show-artifact",
        "show-artifact-relations",
        "on-work-request-completed",
    ):
        assert command in help_text


# --- Work requests --------------------------------------------------------------------------


def test_create_show_and_list_a_work_request(cli: Cli, debusine_server: LiveServer) -> None:
    created = cli.ok(
        "create-work-request", "noop", "--workspace", "System", stdin="result: true\n"
    )

    output = created.yaml()
    assert output["result"] == "success"
    work_request_id = output["work_request_id"]
    assert output["message"].startswith(f"Work request registered: {debusine_server.base_url}/")
    shown = cli.ok("show-work-request", str(work_request_id)).yaml()
    assert shown["status"] == "pending"
    assert shown["task_data"] == {"result": True}
    assert shown["artifacts"] == []
    listed = cli.ok("list-work-requests", "--limit", "1").yaml()
    assert [item["id"] for item in listed] == [work_request_id]


def test_create_work_request_with_data_file(cli: Cli, tmp_path: Path) -> None:
    data = tmp_path / "data.yaml"
    data.write_text("result: false\n")
    output = cli.ok("create-work-request", "noop", "--data", str(data)).yaml()
    shown = cli.ok("show-work-request", str(output["work_request_id"])).yaml()
    assert shown["task_data"] == {"result": False}


def test_invalid_task_data_is_a_400_problem(cli: Cli) -> None:
    before = cli.ok("list-work-requests", "--limit", "1").yaml()

    run = cli.fails(3, "create-work-request", "noop", stdin="foo: bar\n")

    assert "HTTP 400" in run.stderr
    assert "foo" in run.stderr
    assert cli.ok("list-work-requests", "--limit", "1").yaml() == before


def test_wrong_token_is_a_401_problem(
    debusine_server: LiveServer, cli: Cli, tmp_path: Path
) -> None:
    work_request_id = cli.ok("create-work-request", "noop", stdin="{}\n").yaml()["work_request_id"]
    wrong = configured_cli(tmp_path / "home", debusine_server.api_url, "f" * 64)

    run = wrong.fails(3, "create-work-request", "noop", stdin="{}\n")
    assert "HTTP 401" in run.stderr
    assert "Invalid token" in run.stderr
    # Not even a read of the public System workspace: the client learns its token is wrong.
    shown = wrong.fails(3, "show-work-request", str(work_request_id))
    assert "HTTP 401" in shown.stderr


def test_missing_work_request_is_a_404_problem(cli: Cli) -> None:
    run = cli.fails(3, "show-work-request", "999999")
    assert "HTTP 404" in run.stderr
    assert "999999" in run.stderr


def test_priority_adjustment(cli: Cli) -> None:
    work_request_id = cli.ok("create-work-request", "noop", stdin="{}\n").yaml()["work_request_id"]

    lowered = cli.ok(
        "manage-work-request", str(work_request_id), "--set-priority-adjustment", "-5"
    )
    assert lowered.yaml()["priority_adjustment"] == -5
    raised = cli.fails(
        3, "manage-work-request", str(work_request_id), "--set-priority-adjustment", "5"
    )
    assert "HTTP 403" in raised.stderr
    assert cli.ok("show-work-request", str(work_request_id)).yaml()["priority_adjustment"] == -5


def test_abort_then_retry(cli: Cli) -> None:
    work_request_id = cli.ok("create-work-request", "noop", stdin="{}\n").yaml()["work_request_id"]
    refused = cli.fails(3, "retry-work-request", str(work_request_id))
    assert "HTTP 400" in refused.stderr

    aborted = cli.ok("abort-work-request", str(work_request_id)).yaml()
    assert aborted["status"] == "aborted"
    retried = cli.ok("retry-work-request", str(work_request_id)).yaml()

    assert retried["id"] != work_request_id
    assert retried["status"] == "pending"
    cli.fails(3, "abort-work-request", str(work_request_id))


def test_manual_unblock(cli: Cli, debusine_server: LiveServer) -> None:
    work_request_id = cli.ok("create-work-request", "noop", stdin="{}\n").yaml()["work_request_id"]
    refused = cli.fails(3, "manual-unblock", str(work_request_id), "--accept")
    assert "HTTP 400" in refused.stderr and "not a manual-unblock" in refused.stderr
    # Workflows create manual-unblock steps; here one is made by hand.
    with psycopg.connect(debusine_server.instance.database_url) as connection:
        connection.execute(
            "UPDATE db_workrequest SET status = 'blocked', unblock_strategy = 'manual' "
            "WHERE id = %s",
            (work_request_id,),
        )
    assert "nothing to record" in cli.fails(2, "manual-unblock", str(work_request_id)).stderr
    cli.fails(2, "manual-unblock", str(work_request_id), "--accept", "--reject")

    noted = cli.ok("manual-unblock", str(work_request_id), "--notes", "looks right").yaml()
    accepted = cli.ok("manual-unblock", str(work_request_id), "--accept").yaml()

    assert noted["status"] == "blocked"
    assert accepted["status"] == "pending"
    log = accepted["workflow_data"]["manual_unblock"]["log"]
    assert [(entry["notes"], entry["action"]) for entry in log] == [
        ("looks right", None),
        (None, "accept"),
    ]
    late = cli.fails(3, "manual-unblock", str(work_request_id), "--reject")
    assert "only blocked" in late.stderr


def run_with_terminal_stderr(cli: Cli, *args: str) -> tuple[int, str, str]:
    """Run the command with stderr on a pseudo-terminal (stdout piped): status, out, err."""
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(
            [DEBUSINE, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=follower,
            env={**cli.environment(), "COLUMNS": "120", "TERM": "xterm"},
        )
        os.close(follower)
        follower = -1
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the command closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        stdout = process.communicate(timeout=60)[0]
        return process.returncode, stdout.decode(), b"".join(chunks).decode(errors="replace")
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)


def test_uploads_show_progress_on_a_terminal(cli: Cli, tmp_path: Path) -> None:
    [path] = write_files(tmp_path, {"watched.bin": 200_000})

    status, stdout, stderr = run_with_terminal_stderr(
        cli, "create-artifact", "debusine:test", "--upload", str(path)
    )

    assert status == 0, stderr
    assert "watched.bin" in stderr
    assert "━" in stderr  # the bar
    assert "200.0 kB" in stderr
    # The YAML result on stdout stays clean for scripts.
    assert "━" not in stdout
    assert "result: success" in stdout


def test_workflow_commands_say_why_they_are_refused(cli: Cli) -> None:
    # A contributor may not configure the workspace: one line, exit 3, the reason.
    template = cli.fails(3, "create-workflow-template", "daily", "noop")
    assert "Permission denied (HTTP 403)" in template.stderr
    assert "cannot configure workspace System" in template.stderr
    assert template.stderr.count("\n") == 1
    workflow = cli.fails(3, "create-workflow", "daily")
    assert "(HTTP 404)" in workflow.stderr
    assert "no workflow template 'daily'" in workflow.stderr


# --- Artifacts ------------------------------------------------------------------------------


def test_create_show_and_download_an_artifact(cli: Cli, tmp_path: Path) -> None:
    source = tmp_path / "source"
    files = write_files(source, {"one.bin": 300_000, "sub/two words+.txt": 17, "empty": 0})

    created = cli.ok(
        "create-artifact",
        "debusine:test",
        "--upload",
        *map(str, files),
        "--upload-base-directory",
        str(source),
    )

    output = created.yaml()
    assert output["result"] == "success"
    assert output["files_to_upload"] == 2  # the empty file is complete at once
    assert "━" not in created.stderr  # no progress bar when stderr is not a terminal
    artifact_id = str(output["artifact_id"])
    shown = cli.ok("show-artifact", artifact_id).yaml()
    assert shown["category"] == "debusine:test"
    assert shown["files_to_upload"] == []
    assert {name: entry["checksums"]["sha256"] for name, entry in shown["files"].items()} == {
        path.relative_to(source).as_posix(): sha256_of(path) for path in files
    }

    target = tmp_path / "target"
    target.mkdir()
    cli.ok("download-artifact", artifact_id, "--target-directory", str(target))
    for path in files:
        assert (target / path.relative_to(source)).read_bytes() == path.read_bytes()

    cli.ok("download-artifact", artifact_id, "--target-directory", str(target), "--tarball")
    with tarfile.open(target / f"artifact-{artifact_id}.tar.gz") as tarball:
        names = sorted(member.name for member in tarball.getmembers() if member.isfile())
    assert names == ["empty", "one.bin", "sub/two words+.txt"]


def test_create_artifact_with_data_and_known_files(cli: Cli, tmp_path: Path) -> None:
    (path,) = write_files(tmp_path, {"again.bin": 1000})
    data = tmp_path / "data.yaml"
    data.write_text("note: hello\n")
    first = cli.ok("create-artifact", "debusine:test", "--upload", str(path)).yaml()
    second = cli.ok(
        "create-artifact", "debusine:test", "--upload", str(path), "--data", str(data)
    ).yaml()

    assert first["files_to_upload"] == 1
    assert second["files_to_upload"] == 0
    assert cli.ok("show-artifact", str(second["artifact_id"])).yaml()["data"] == {"note": "hello"}


def test_create_artifact_in_unknown_workspace_uploads_nothing(cli: Cli, tmp_path: Path) -> None:
    (path,) = write_files(tmp_path, {"lost.bin": 10})
    run = cli.fails(
        3, "create-artifact", "debusine:test", "--workspace", "nowhere", "--upload", str(path)
    )
    assert "nowhere" in run.stderr


def test_create_artifact_of_missing_file_is_a_bad_argument(cli: Cli, tmp_path: Path) -> None:
    run = cli.run("create-artifact", "debusine:test", "--upload", str(tmp_path / "missing"))
    assert run.returncode == 2
    assert "no such file" in run.stderr


def test_download_onto_a_directory_is_a_local_error(cli: Cli, tmp_path: Path) -> None:
    (path,) = write_files(tmp_path / "source", {"taken.bin": 100})
    artifact_id = str(
        cli.ok("create-artifact", "debusine:test", "--upload", str(path)).yaml()["artifact_id"]
    )
    target = tmp_path / "target"
    (target / "taken.bin").mkdir(parents=True)

    run = cli.fails(2, "download-artifact", artifact_id, "--target-directory", str(target))

    assert run.stderr.count("\n") == 1, run.describe()
    assert f"cannot write {target / 'taken.bin'}: Is a directory" in run.stderr
    assert (target / "taken.bin").is_dir()
    assert list(target.iterdir()) == [target / "taken.bin"]  # no .part left behind


def test_missing_artifact_is_a_404_problem(cli: Cli) -> None:
    assert "HTTP 404" in cli.fails(3, "show-artifact", "999999").stderr
    assert "HTTP 404" in cli.fails(3, "download-artifact", "999999").stderr
    assert "HTTP 404" in cli.fails(3, "show-artifact-relations", "999999").stderr


def test_import_debian_upload(cli: Cli, tmp_path: Path) -> None:
    upload = build_upload(tmp_path / "build")

    output = cli.ok("import-debian-artifact", str(upload.changes)).yaml()

    assert output["category"] == "debian:upload"
    related = [(entry["artifact_id"], entry["category"]) for entry in output["extends"]]
    assert [category for _id, category in related] == [
        "debian:source-package",
        "debian:binary-package",
        "debian:binary-package",
        "debian:binary-packages",
    ]
    primary = str(output["artifact_id"])
    relations = cli.ok("show-artifact-relations", primary).yaml()
    assert sorted((entry["target"], entry["type"]) for entry in relations) == sorted(
        (artifact_id, kind) for artifact_id, _ in related for kind in ("extends", "relates-to")
    )
    reverse = cli.ok("show-artifact-relations", str(related[0][0]), "--reverse").yaml()
    assert sorted((entry["artifact"], entry["type"]) for entry in reverse) == [
        (int(primary), "extends"),
        (int(primary), "relates-to"),
    ]

    upload_artifact = cli.ok("show-artifact", primary).yaml()
    assert sorted(upload_artifact["files"]) == sorted(path.name for path in upload.files())
    assert upload_artifact["data"]["type"] == "dpkg"
    assert upload_artifact["data"]["changes_fields"]["Source"] == "hello-client"

    source = cli.ok("show-artifact", str(related[0][0])).yaml()
    assert source["data"]["name"] == "hello-client"
    assert source["data"]["version"] == "1.0"
    assert sorted(source["files"]) == ["hello-client_1.0.dsc", "hello-client_1.0.tar.xz"]
    target = tmp_path / "source"
    target.mkdir()
    cli.ok("download-artifact", str(related[0][0]), "--target-directory", str(target))
    assert (target / upload.dsc.name).read_bytes() == upload.dsc.read_bytes()

    binary = cli.ok("show-artifact", str(related[1][0])).yaml()
    assert binary["data"]["srcpkg_name"] == "hello-client"
    assert binary["data"]["deb_fields"]["Package"] in ("hello-client", "hello-client-data")
    assert "control" in binary["data"]["deb_control_files"]
    packages = cli.ok("show-artifact", str(related[3][0])).yaml()
    assert packages["data"]["architecture"] == "all"
    assert sorted(packages["data"]["packages"]) == ["hello-client", "hello-client-data"]
    assert sorted(packages["files"]) == sorted(path.name for path in upload.debs)


def test_import_debian_binary_package(cli: Cli, tmp_path: Path) -> None:
    upload = build_upload(tmp_path / "build")
    output = cli.ok("import-debian-artifact", str(upload.debs[0])).yaml()
    assert output["category"] == "debian:binary-package"
    assert output["extends"] == []


def test_import_of_tampered_upload_creates_nothing(cli: Cli, tmp_path: Path) -> None:
    upload = build_upload(tmp_path / "build")
    upload.debs[0].write_bytes(upload.debs[0].read_bytes() + b"tampered")
    before = cli.ok("create-artifact", "debusine:test").yaml()["artifact_id"]

    run = cli.run("import-debian-artifact", str(upload.changes))

    assert run.returncode == 2, run.describe()
    assert "does not match" in run.stderr
    after = cli.ok("create-artifact", "debusine:test").yaml()["artifact_id"]
    assert after == before + 1
