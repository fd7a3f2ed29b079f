"""
Disaster recovery: restore an older database dump under newer stores, then clean up.

Follows docs/howto/backup-and-restore.md on a real server process: artifacts are uploaded
through the API, the database is dumped with `pg_dump` and the store copied after it, then
the server moves on (more artifacts, an upload that was in flight at dump time finishes,
`instance delete_expired` deletes an expired artifact). The server is stopped, the older dump is
restored with `pg_restore`, migrations run, and the server starts again. Then
`debusine-admin file_store vacuum` and `instance delete_expired` run as the operator would run them
(subprocesses, the instance's environment), and the test checks that:

- the contents the restored database refers to but the live store lost are reported as a
  problem (exit code 1), and the report is clean once they are copied back from the store
  backup;
- nothing the restored database refers to is deleted (every file is downloaded through the
  API and compared byte for byte);
- the newer entries are reported, kept while younger than a day, and deleted once they are
  older (the test ages every entry of the store, referenced or not, to stand for that day);
- the file whose upload finished after the dump can be uploaded again;
- the artifact that expired by the restored database's rules is deleted again;
- each command says what it did.

A second scenario restores to a point in time with continuous archiving on a private
PostgreSQL cluster (the machine's binaries, `archive_command` copying WAL segments): a base
backup with `pg_basebackup`, more work, a restore that replays the archived WAL up to a chosen
moment (`recovery_target_time`), and what the server then serves and `file_store vacuum` says.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from debusine.testing.devstack import (
    STARTUP_TIMEOUT,
    ProcessSpec,
    gunicorn_argv,
    wait_until_answering,
)
from debusine.testing.embedded import PrivatePostgres
from debusine.testing.processes import free_port
from debusine.testing.throwaway import ThrowawayInstance, throwaway_instance

pytestmark = pytest.mark.integration

#: Further back than vacuum_storage's one-day minimum age of unknown entries.
TWO_DAYS = 2 * 24 * 3600


@dataclass(frozen=True)
class Uploaded:
    """An artifact created through the API, and the contents of its files."""

    id: int
    contents: dict[str, bytes]  # path -> bytes


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entry_name(data: bytes) -> str:
    """The store entry the contents live under (`aa/bb/cc/<sha256>-<size>`)."""
    digest = sha256_hex(data)
    return f"{digest[0:2]}/{digest[2:4]}/{digest[4:6]}/{digest}-{len(data)}"


class Api:
    """The few API calls the scenario makes, with a contributor's token."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self.session.headers["Token"] = token

    def create_artifact(
        self, contents: dict[str, bytes], expiration_delay: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "category": "debusine:test",
            "workspace": "System",
            "files": {
                path: {
                    "size": len(data),
                    "checksums": {"sha256": sha256_hex(data)},
                    "type": "file",
                }
                for path, data in contents.items()
            },
            "data": {},
        }
        if expiration_delay is not None:
            body["expiration_delay"] = expiration_delay
        response = self.session.post(f"{self.base_url}/api/1.0/artifact/", json=body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def upload_file(self, artifact_id: int, path: str, data: bytes) -> None:
        response = self.session.put(
            f"{self.base_url}/api/1.0/artifact/{artifact_id}/files/{path}/",
            data=data,
            headers={"Content-Range": f"bytes 0-{len(data) - 1}/{len(data)}"},
        )
        assert response.status_code == 201, response.text

    def upload_artifact(
        self, contents: dict[str, bytes], expiration_delay: str | None = None
    ) -> Uploaded:
        created = self.create_artifact(contents, expiration_delay)
        assert created["files_to_upload"] == sorted(contents)
        for path, data in contents.items():
            self.upload_file(created["id"], path, data)
        return Uploaded(created["id"], contents)

    def artifact(self, artifact_id: int) -> requests.Response:
        return self.session.get(f"{self.base_url}/api/1.0/artifact/{artifact_id}/")

    def download(self, artifact_id: int, path: str) -> bytes:
        artifact = self.artifact(artifact_id)
        assert artifact.status_code == 200, artifact.text
        response = self.session.get(artifact.json()["files"][path]["url"])
        assert response.status_code == 200, f"{artifact_id}/{path}: {response.status_code}"
        return response.content


def restart_server(instance: ThrowawayInstance) -> str:
    """Start the instance's server again (on a new port); return its base URL."""
    port = free_port()
    instance.supervisor.start(
        ProcessSpec("server", gunicorn_argv(f"127.0.0.1:{port}", workers=1)),
        env=instance.environment,
        output=instance.log,
    )
    base_url = f"http://127.0.0.1:{port}"
    wait_until_answering(f"{base_url}/api/1.0/whoami/", instance.supervisor, STARTUP_TIMEOUT)
    return base_url


def run_tool(*argv: str) -> None:
    """Run a PostgreSQL client tool; fail the test with its output if it fails."""
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{argv[0]} exited with {result.returncode}:\n{result.stderr}"


def admin(instance: ThrowawayInstance, *args: str) -> subprocess.CompletedProcess[str]:
    """`debusine-admin ARGS` as the operator runs it: its own process, any exit code."""
    return subprocess.run(
        [sys.executable, "-m", "debusine.server.management.main", *args],
        env=instance.environment,
        capture_output=True,
        text=True,
        check=False,
    )


def store_entries(store: Path) -> set[str]:
    return {
        path.relative_to(store).as_posix()
        for path in store.rglob("*")
        if path.is_file() and not path.name.startswith(".")
    }


def age_store(store: Path, seconds: int) -> None:
    """Move the modification time of every entry of `store` `seconds` into the past."""
    for path in store.rglob("*"):
        if path.is_file():
            status = path.stat()
            os.utime(path, (status.st_atime - seconds, status.st_mtime - seconds))


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[ThrowawayInstance]:
    """A throwaway instance of this test's own: the test drops and restores its database."""
    from django.conf import settings

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with throwaway_instance(
        postgres_url=settings.DEBUSINE_DATABASE_URL,
        redis_url=settings.DEBUSINE_REDIS_URL,
        data_dir=data_dir,
        name_prefix="test_disaster_recovery",
    ) as created:
        yield created


def test_restoring_an_older_dump_loses_no_referenced_file(
    instance: ThrowawayInstance, tmp_path: Path
) -> None:
    store = instance.data_dir / "store"
    token = instance.create_contributor("operator")
    api = Api(instance.base_url, token)

    # --- Before the backup ------------------------------------------------------------------
    kept = [
        api.upload_artifact({"a.txt": b"first file\n", "dir/b.bin": os.urandom(70_000)}),
        api.upload_artifact({"c.txt": b"third file\n"}),
    ]
    # Expires one second after its creation: delete_expired will find it expired.
    expiring = api.upload_artifact({"e.txt": b"short-lived\n"}, expiration_delay="1")
    expiring_uploaded_at = time.monotonic()
    # Created before the backup, its file uploaded only after it.
    in_flight_contents = b"uploaded after the dump\n"
    in_flight = api.create_artifact({"late.txt": in_flight_contents})
    before_backup = store_entries(store)

    dump = tmp_path / "debusine.dump"
    run_tool("pg_dump", "--format=custom", f"--file={dump}", f"--dbname={instance.database_url}")
    # The store backup, taken after the database backup as the how-to says.
    store_backup = tmp_path / "store-backup"
    shutil.copytree(store, store_backup)

    # --- After the backup: work the restore will lose ----------------------------------------
    newer = api.upload_artifact({"n1.txt": b"newer one\n", "n2.bin": os.urandom(50_000)})
    api.upload_file(in_flight["id"], "late.txt", in_flight_contents)
    lost_entries = {entry_name(data) for data in newer.contents.values()} | {
        entry_name(in_flight_contents)
    }
    # The delete_expired timer runs: the restored database will still refer to these contents.
    time.sleep(max(0.0, expiring_uploaded_at + 1.1 - time.monotonic()))
    expired = admin(instance, "instance", "delete_expired")
    assert f"Deleted artifact {expiring.id}" in expired.stdout, expired.stdout + expired.stderr
    expired_entry = entry_name(expiring.contents["e.txt"])
    assert store_entries(store) == (before_backup - {expired_entry}) | lost_entries

    # --- Restore, as the how-to says ------------------------------------------------------------
    instance.supervisor.stop_all()
    run_tool(
        "pg_restore",
        "--clean",
        "--if-exists",
        "--single-transaction",
        f"--dbname={instance.database_url}",
        str(dump),
    )
    migrate = admin(instance, "migrate", "--no-input")
    assert migrate.returncode == 0, migrate.stderr
    api = Api(restart_server(instance), token)

    assert api.artifact(newer.id).status_code == 404
    assert api.artifact(in_flight["id"]).json()["files_to_upload"] == ["late.txt"]

    # --- vacuum_storage right after the restore -----------------------------------------------
    dry_run = admin(instance, "file_store", "vacuum", "--dry-run")
    assert dry_run.returncode == 1, dry_run.stdout + dry_run.stderr
    assert dry_run.stdout.splitlines() == [
        f"Note: Store Default: kept {len(lost_entries)} unknown entries younger than a day"
        " (uploads in progress, or files newer than a restored database)",
        f"Problem: Store Default: contents of {expired_entry.rsplit('/', 1)[1]} are missing"
        " although the database says the store holds them",
    ]
    assert "0 action(s) planned, 1 problem(s)" in dry_run.stderr
    assert "vacuum_storage: store entries..." in dry_run.stderr  # progress

    # The missing contents come back from the store backup, as the how-to says.
    (store / expired_entry).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(store_backup / expired_entry, store / expired_entry)
    dry_run = admin(instance, "file_store", "vacuum", "--dry-run")
    assert dry_run.returncode == 0, dry_run.stdout + dry_run.stderr
    assert dry_run.stdout.strip().endswith("0 action(s) planned, 0 problem(s)")

    vacuum = admin(instance, "file_store", "vacuum")
    assert vacuum.returncode == 0, vacuum.stdout + vacuum.stderr
    assert vacuum.stdout.strip().endswith("0 action(s), 0 problem(s)")
    assert store_entries(store) == before_backup | lost_entries

    # --- A day later (every entry aged, referenced or not) ---------------------------------
    age_store(store, TWO_DAYS)
    dry_run = admin(instance, "file_store", "vacuum", "--dry-run")
    assert dry_run.returncode == 0, dry_run.stdout + dry_run.stderr
    for name in lost_entries:
        assert (
            f"Would delete {name} from store Default: the database does not know it"
            in dry_run.stdout
        )
    assert store_entries(store) == before_backup | lost_entries

    vacuum = admin(instance, "file_store", "vacuum")
    assert vacuum.returncode == 0, vacuum.stdout + vacuum.stderr
    deleted = {
        line.removeprefix("Deleted ").split(" from store Default")[0]
        for line in vacuum.stdout.splitlines()
        if line.endswith("the database does not know it")
    }
    assert deleted == lost_entries
    assert "Problem" not in vacuum.stdout
    assert store_entries(store) == before_backup

    for artifact in [*kept, expiring]:
        for path, data in artifact.contents.items():
            assert api.download(artifact.id, path) == data

    # The client whose upload the restore lost sends the file again.
    api.upload_file(in_flight["id"], "late.txt", in_flight_contents)
    assert api.download(in_flight["id"], "late.txt") == in_flight_contents

    # --- delete_expired: only what the restored database says has expired --------------------
    expired = admin(instance, "instance", "delete_expired")
    assert expired.returncode == 0, expired.stdout + expired.stderr
    assert expired.stdout.splitlines() == [
        f"Deleted artifact {expiring.id}",
        f"Removed file {expired_entry.rsplit('/', 1)[1]} from Default",
        "2 deletion(s)",
    ]
    assert api.artifact(expiring.id).status_code == 404
    assert store_entries(store) == (before_backup - {expired_entry}) | {
        entry_name(in_flight_contents)
    }
    for artifact in kept:
        for path, data in artifact.contents.items():
            assert api.download(artifact.id, path) == data

    # Everything the database refers to is where it says: a last pass finds nothing to do.
    final = admin(instance, "file_store", "vacuum")
    assert final.returncode == 0, final.stdout + final.stderr
    assert final.stdout.strip() == "0 action(s), 0 problem(s)"


def wait_until_archived(cluster: PrivatePostgres, timeout: float = 60) -> None:
    """Close the current WAL segment and wait until the archiver has copied it."""
    with psycopg.connect(cluster.url(), autocommit=True) as connection:
        row = connection.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
        assert row is not None
        segment = str(row[0])
        deadline = time.monotonic() + timeout
        while not (cluster.archive / segment).is_file():
            assert time.monotonic() < deadline, f"WAL segment {segment} was never archived"
            time.sleep(0.1)


def test_point_in_time_restore_from_the_wal_archive(tmp_path: Path) -> None:
    """
    Continuous archiving, as the how-to describes: a base backup, then WAL segments archived
    as they fill; the restore replays them up to a chosen moment. What was committed before
    that moment (after the base backup) is back, what came after is gone, and the store's
    newer entries are reported as younger unknown entries, not as problems.
    """
    from django.conf import settings

    cluster = PrivatePostgres.create("debusine-test-pitr-")
    try:
        cluster.init(archive=True)
        cluster.start()
        data_dir = tmp_path / "data"
        data_dir.mkdir()
        with throwaway_instance(
            postgres_url=cluster.url(),
            redis_url=settings.DEBUSINE_REDIS_URL,
            data_dir=data_dir,
            name_prefix="test_pitr",
        ) as instance:
            token = instance.create_contributor("operator")
            api = Api(instance.base_url, token)
            before_backup = api.upload_artifact({"old.txt": b"before the base backup\n"})
            backup = cluster.root / "base-backup"
            cluster.base_backup(backup)

            # After the base backup: only the archived WAL holds these.
            replayed = api.upload_artifact(
                {"kept.txt": b"committed before the target\n", "kept.bin": os.urandom(40_000)}
            )
            with psycopg.connect(instance.database_url, autocommit=True) as connection:
                row = connection.execute("SELECT clock_timestamp()::text").fetchone()
                assert row is not None
                target_time = str(row[0])
            lost = api.upload_artifact({"lost.bin": os.urandom(30_000)})
            wait_until_archived(cluster)

            # --- The disaster, and the restore to `target_time` --------------------------------
            instance.supervisor.stop_all()
            cluster.stop()
            cluster.restore_to(backup, cluster.archive, target_time)
            migrate = admin(instance, "migrate", "--no-input")
            assert migrate.returncode == 0, migrate.stderr
            api = Api(restart_server(instance), token)

            for artifact in (before_backup, replayed):
                for path, data in artifact.contents.items():
                    assert api.download(artifact.id, path) == data
            assert api.artifact(lost.id).status_code == 404

            dry_run = admin(instance, "file_store", "vacuum", "--dry-run")
            assert dry_run.returncode == 0, dry_run.stdout + dry_run.stderr
            assert dry_run.stdout.splitlines()[0] == (
                "Note: Store Default: kept 1 unknown entries younger than a day"
                " (uploads in progress, or files newer than a restored database)"
            ), dry_run.stdout
            assert entry_name(lost.contents["lost.bin"]) in store_entries(data_dir / "store")
    finally:
        cluster.remove()
