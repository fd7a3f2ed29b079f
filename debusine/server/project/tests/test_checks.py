"""Tests of the system checks run by `debusine-admin check`."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.checks import CheckMessage
from django.test import override_settings

from debusine.server.project import checks, instance
from debusine.testing.embedded import drop_database, ensure_database_exists


def admin(*args: str, **environment: str) -> subprocess.CompletedProcess[str]:
    """Run `debusine-admin` in a subprocess with extra environment variables."""
    return subprocess.run(
        [sys.executable, "-m", "debusine.server.management.main", *args],
        env={**os.environ, **environment},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def ids(messages: list[CheckMessage]) -> list[str]:
    return [str(message.id) for message in messages]


def test_unreachable_database_is_one_clear_line(tmp_path: Path) -> None:
    result = admin(
        "check",
        DEBUSINE_DATABASE_URL="postgresql://nobody@127.0.0.1:1/nothing",
        DEBUSINE_DATA_DIR=str(tmp_path),
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if "debusine.E001" in line]
    assert len(error_lines) == 1
    assert (
        "Cannot connect to the database postgresql://nobody@127.0.0.1:1/nothing"
        in (error_lines[0])
    )
    # Unapplied migrations cannot be told without a database: only E001 is reported.
    assert "debusine.E005" not in result.stderr


def test_database_check_passes_on_the_test_database(db: None) -> None:
    assert checks.check_database_reachable() == []


@pytest.fixture
def empty_database_url() -> Iterator[str]:
    """A database with no tables, dropped afterwards."""
    url = instance.with_database_name(
        settings.DEBUSINE_DATABASE_URL, f"test_checks_{uuid.uuid4().hex[:10]}"
    )
    ensure_database_exists(url)
    yield url
    drop_database(url)


def test_unapplied_migrations_are_an_error(empty_database_url: str, tmp_path: Path) -> None:
    result = admin(
        "check", DEBUSINE_DATABASE_URL=empty_database_url, DEBUSINE_DATA_DIR=str(tmp_path)
    )
    assert result.returncode == 1
    assert "debusine.E005" in result.stderr
    assert "migration(s) not applied: contenttypes.0001_initial" in result.stderr
    assert "debusine-admin migrate" in result.stderr


def test_migrations_check_passes_once_migrated(db: None) -> None:
    assert checks.check_migrations_applied() == []


def test_migrations_check_is_skipped_under_migrate(db: None) -> None:
    # `migrate` passes its database: it is about to apply whatever is missing.
    assert checks.check_migrations_applied(databases=["default"]) == []


@override_settings(DEBUG=False, SECRET_KEY=settings.INSECURE_SECRET_KEY)
def test_insecure_secret_key_without_debug_is_an_error() -> None:
    messages = checks.check_secret_key()
    assert ids(messages) == ["debusine.E002"]
    assert "secret-key" in str(messages[0].hint)


@override_settings(DEBUG=True, SECRET_KEY=settings.INSECURE_SECRET_KEY)
def test_insecure_secret_key_is_fine_in_debug_mode() -> None:
    assert checks.check_secret_key() == []


@override_settings(DEBUG=False, SECRET_KEY="a-real-secret-key-" + "x" * 40)
def test_real_secret_key_passes() -> None:
    assert checks.check_secret_key() == []


def test_secret_key_check_runs_with_deploy_only(tmp_path: Path) -> None:
    environment = {
        "DEBUSINE_DATA_DIR": str(tmp_path),
        "DEBUSINE_SECRET_KEY": "",
        "DEBUSINE_DEBUG": "false",
    }
    plain = admin("check", **environment)
    assert "debusine.E002" not in plain.stderr
    deploy = admin("check", "--deploy", **environment)
    assert deploy.returncode == 1
    assert "debusine.E002" in deploy.stderr


def test_writable_and_creatable_directories_pass(tmp_path: Path) -> None:
    with override_settings(
        DEBUSINE_STORE_DIRECTORY=tmp_path, DEBUSINE_UPLOAD_DIRECTORY=tmp_path / "not" / "yet"
    ):
        assert checks.check_directories_writable() == []
    assert not (tmp_path / "not").exists()  # the check creates nothing


def test_directory_that_cannot_be_written_is_an_error() -> None:
    # /proc refuses new files even to root, unlike a chmod-ed directory.
    with override_settings(DEBUSINE_STORE_DIRECTORY=Path("/proc")):
        messages = checks.check_directories_writable()
    assert ids(messages) == ["debusine.E003"]
    assert "cannot write in it" in messages[0].msg


def test_directory_that_cannot_be_created_is_an_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with override_settings(DEBUSINE_UPLOAD_DIRECTORY=blocker / "uploads"):
        messages = checks.check_directories_writable()
    assert ids(messages) == ["debusine.E004"]
    assert "is not a directory" in messages[0].msg


def test_directory_path_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with override_settings(DEBUSINE_STORE_DIRECTORY=blocker):
        assert ids(checks.check_directories_writable()) == ["debusine.E003"]


# --- check --deploy: an insecure configuration ----------------------------------------------


def deploy_messages(result: subprocess.CompletedProcess[str]) -> set[str]:
    """The ids of our own messages in the output of `check --deploy`."""
    return {
        word.rstrip(":")
        for line in result.stderr.splitlines()
        for word in line.split()
        if word.startswith("(debusine.") or word.startswith("debusine.")
    } | {part.split(")")[0] for part in result.stderr.split("(") if part.startswith("debusine.")}


def test_check_deploy_reports_an_insecure_configuration(tmp_path: Path) -> None:
    key_file = tmp_path / instance.SECRET_KEY_FILE
    key_file.write_text("short\n")
    key_file.chmod(0o644)
    (tmp_path / instance.REDIS_URL_FILE).write_text("redis://192.0.2.7:6379/0\n")
    (tmp_path / instance.REDIS_URL_FILE).chmod(0o606)

    result = admin(
        "check",
        "--deploy",
        DEBUSINE_DATA_DIR=str(tmp_path),
        DEBUSINE_SECRET_KEY="",
        DEBUSINE_DEBUG="true",
        DEBUSINE_REDIS_URL="",
    )

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    found = deploy_messages(result)
    assert {"debusine.E006", "debusine.E007", "debusine.E008", "debusine.W001"} <= found
    assert f"{key_file} holds secrets and any user of this machine can read it" in result.stderr
    assert "can write it" not in result.stderr.split(str(key_file))[1].split("\n")[0]
    assert "Redis is reached over the network without TLS" in result.stderr


def test_check_deploy_passes_a_secure_configuration(tmp_path: Path) -> None:
    key_file = tmp_path / instance.SECRET_KEY_FILE
    key_file.write_text(uuid.uuid4().hex + uuid.uuid4().hex + "\n")
    key_file.chmod(0o600)

    result = admin("check", "--deploy", DEBUSINE_DATA_DIR=str(tmp_path), DEBUSINE_SECRET_KEY="")

    # Only our deploy checks are asserted: Django's own deploy warnings (HSTS, cookies) may
    # remain, and the database the subprocess reaches is not migrated (E005).
    found = deploy_messages(result)
    assert found & {"debusine.E002", "debusine.E006", "debusine.E007", "debusine.E008"} == set()
    assert "debusine.W001" not in found, result.stderr
    plain = admin("check", DEBUSINE_DATA_DIR=str(tmp_path), DEBUSINE_DEBUG="true")
    assert "debusine.E006" not in plain.stderr  # deploy-only


@pytest.mark.parametrize(
    ("url", "insecure"),
    [
        ("postgresql://u@db.example.org/debusine", True),
        ("postgresql://u@10.1.2.3/debusine?sslmode=prefer", True),
        ("postgresql://u@db.example.org/debusine?sslmode=require", False),
        ("postgresql://u@127.0.0.1/debusine", False),
        ("postgresql://u@[::1]/debusine", False),
        ("postgresql:///debusine?host=/run/postgresql", False),
    ],
)
def test_database_without_tls_over_the_network(db: None, url: str, insecure: bool) -> None:
    with override_settings(DEBUSINE_DATABASE_URL=url):
        messages = checks.check_tls_to_services()
    assert ("debusine.W001" in ids(messages)) == insecure
    if insecure:
        assert "The database" in messages[0].msg


@pytest.mark.parametrize(
    ("url", "insecure"),
    [
        ("redis://redis.example.org:6379/0", True),
        ("rediss://redis.example.org:6379/0", False),
        ("redis://localhost:6379/0", False),
        ("unix:///run/redis/redis.sock", False),
    ],
)
def test_redis_without_tls_over_the_network(db: None, url: str, insecure: bool) -> None:
    with override_settings(DEBUSINE_REDIS_URL=url):
        assert ("debusine.W001" in ids(checks.check_tls_to_services())) == insecure


def test_s3_store_without_tls_over_the_network(playground: Any) -> None:
    playground.create_file_store(
        "plain", backend="S3", configuration={"endpoint_url": "http://s3.example.org"}
    )
    playground.create_file_store(
        "local-moto", backend="S3", configuration={"endpoint_url": "http://127.0.0.1:9000"}
    )
    playground.create_file_store(
        "tls", backend="S3", configuration={"endpoint_url": "https://s3.example.org"}
    )
    messages = checks.check_tls_to_services()
    assert [message.msg for message in messages] == [
        "S3 file store plain is reached over the network without TLS: http://s3.example.org"
    ]
