"""Tests of `debusine-admin worker`."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from django.utils import timezone
from pytest_django import DjangoCaptureOnCommitCallbacks

from debusine.server.db.models import (
    Asset,
    AssetCategory,
    Token,
    Worker,
    WorkerPool,
    WorkRequestStatus,
)
from debusine.server.db.models.workers import ACTIVATION_TOKEN_LIFETIME
from debusine.server.management.tests.helpers import run, run_fails, run_usage_error
from debusine.testing.playground import Playground


def test_create_worker_prints_activation_key(db: None) -> None:
    before = timezone.now()

    key = run("worker", "create", "build1.example.org").strip()

    worker = Worker.objects.get(name="build1-example-org")
    assert worker.worker_type == "external"
    assert worker.token is None
    activation = Token.objects.get_by_key(key)
    assert activation is not None
    assert worker.activation_token == activation
    assert activation.enabled and activation.user is None
    assert activation.expire_at is not None
    assert before + ACTIVATION_TOKEN_LIFETIME <= activation.expire_at
    assert activation.expire_at <= timezone.now() + ACTIVATION_TOKEN_LIFETIME
    assert timedelta(minutes=15) == ACTIVATION_TOKEN_LIFETIME


def test_create_signing_worker_with_taken_name(db: None) -> None:
    run("worker", "create", "signer.example.org")

    run("worker", "create", "--worker-type", "signing", "signer.example.org")

    assert Worker.objects.get(name="signer-example-org-2").worker_type == "signing"


def test_create_worker_usage_errors(db: None) -> None:
    run_usage_error("worker", "create", "--worker-type", "celery", "x.example.org")
    run_usage_error("worker", "create")
    run_usage_error("worker", "frobnicate")
    assert not Worker.objects.exists()


def test_enable_by_name_and_disable_by_token_key(playground: Playground) -> None:
    worker, key = playground.create_worker("builder", enabled=False)

    assert run("worker", "enable", "builder") == "Enabled worker builder\n"
    worker.refresh_from_db()
    assert worker.is_enabled()

    assert run("worker", "disable", key) == "Disabled worker builder\n"
    worker.refresh_from_db()
    assert not worker.is_enabled()


def test_disable_takes_pending_and_running_work_requests_back(
    playground: Playground, django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks
) -> None:
    user = playground.create_user("carol")
    worker, _ = playground.create_worker("builder")
    pending = playground.create_work_request(created_by=user, worker=worker)
    running = playground.create_work_request(
        created_by=user, worker=worker, status=WorkRequestStatus.RUNNING
    )

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        run("worker", "disable", "builder")

    pending.refresh_from_db()
    running.refresh_from_db()
    assert pending.worker is None
    assert pending.status == WorkRequestStatus.PENDING
    # The running one is aborted (its worker is told to stop) and retried elsewhere.
    assert running.status == WorkRequestStatus.ABORTED
    assert running.worker is None
    retry = running.superseded_by
    assert retry.status == WorkRequestStatus.PENDING
    assert retry.worker is None
    assert running.output_data_json is not None
    assert running.output_data_json["errors"][0]["code"] == "worker-failed"
    # Notifications go out only once the change is committed: the abort, the closing of the
    # worker's websockets, and a scheduling pass.
    called = sorted(getattr(callback, "func", callback).__name__ for callback in callbacks)
    assert called == [
        "notify_work_request_aborted",
        "notify_worker_disabled",
        "scheduling_pass_after_commit",
    ]


def test_pause_and_resume(playground: Playground) -> None:
    worker, _ = playground.create_worker("builder")

    assert run("worker", "pause", "builder") == "Paused worker builder\n"
    worker.refresh_from_db()
    assert worker.draining_at is not None and worker.is_enabled()
    assert run("worker", "resume", "builder") == "Resumed worker builder\n"
    worker.refresh_from_db()
    assert worker.draining_at is None


def test_pool_workers_are_not_paused(playground: Playground) -> None:
    account = Asset.objects.create(
        category=AssetCategory.CLOUD_PROVIDER_ACCOUNT,
        data={"provider_type": "local", "name": "local", "configuration": {}, "credentials": {}},
    )
    pool = WorkerPool.objects.create(
        name="pool", provider_account=account, architectures=["amd64"]
    )
    worker, _ = playground.create_worker("pool-001")
    worker.worker_pool = pool
    worker.save()

    for verb in ("pause", "resume"):
        assert "belongs to a worker pool" in run_fails("worker", verb, "pool-001")
    worker.refresh_from_db()
    assert worker.draining_at is None


def test_enable_signing_worker_needs_the_right_type(playground: Playground) -> None:
    playground.create_worker("signer", enabled=False, worker_type="signing")

    assert run_fails("worker", "enable", "signer") == (
        "no external worker has the name or token 'signer'"
    )
    run("worker", "enable", "--worker-type", "signing", "signer")
    assert Worker.objects.get(name="signer").is_enabled()


def test_enable_errors(playground: Playground) -> None:
    run("worker", "create", "fresh.example.org")

    assert run_fails("worker", "enable", "ghost") == (
        "no external worker has the name or token 'ghost'"
    )
    assert run_fails("worker", "enable", "fresh-example-org") == (
        "worker fresh-example-org has not registered yet: it has no token"
    )


def test_disable_a_worker_that_has_not_registered_yet(db: None) -> None:
    key = run("worker", "create", "fresh.example.org").strip()

    run("worker", "disable", key)

    activation = Token.objects.get_by_key(key)
    assert activation is not None and not activation.enabled


def test_list_workers(playground: Playground) -> None:
    worker, _ = playground.create_worker("builder")
    worker.set_dynamic_metadata({"system:host_architecture": "amd64", "system:cpu_count": 4})
    worker.set_static_metadata({"system:cpu_count": 2})
    worker.mark_connected()
    user = playground.create_user("carol")
    running = playground.create_work_request(created_by=user, worker=worker, status="running")
    playground.create_work_request(created_by=user, worker=worker, status="completed")
    playground.create_worker("idle", enabled=False, worker_type="signing")

    lines = run("worker", "list").splitlines()

    assert lines[0].split() == [
        "NAME",
        "TYPE",
        "ENABLED",
        "CONNECTED",
        "REGISTERED",
        "WORK",
        "METADATA",
    ]
    assert lines[1].startswith("builder  external  yes")
    assert f" {running.pk} " in lines[1]
    assert lines[1].endswith("host_architecture=amd64 cpu_count=2 1 static/2 dynamic")
    assert lines[2].startswith("idle     signing   no       -")

    listed = yaml.safe_load(run("worker", "list", "--yaml"))
    assert [item["name"] for item in listed] == ["builder", "idle"]
    assert listed[0]["static_metadata"] == {"system:cpu_count": 2}
    assert listed[0]["enabled"] is True
    assert listed[0]["connected_at"].endswith("Z")
    assert listed[0]["last_seen_at"].endswith("Z")
    assert listed[0]["work_requests"] == [running.pk]
    assert listed[0]["concurrency"] == 1
    assert listed[1]["connected_at"] is None
    assert listed[1]["last_seen_at"] is None
    assert listed[1]["work_requests"] == []


def test_edit_metadata_from_file_and_stdin(playground: Playground, tmp_path: Path) -> None:
    worker, _ = playground.create_worker("builder")
    metadata = tmp_path / "metadata.yaml"
    metadata.write_text("system:architectures: [amd64, i386]\ntasks_denylist: [sbuild]\n")

    out = run("worker", "edit_metadata", "builder", "--set", str(metadata))

    assert out == "Updated the static metadata of worker builder\n"
    worker.refresh_from_db()
    assert worker.static_metadata == {
        "system:architectures": ["amd64", "i386"],
        "tasks_denylist": ["sbuild"],
    }
    assert yaml.safe_load(run("worker", "edit_metadata", "builder")) == worker.static_metadata

    run("worker", "edit_metadata", "builder", "--set", "-", stdin="")
    worker.refresh_from_db()
    assert worker.static_metadata == {}
    assert run("worker", "edit_metadata", "builder") == "{}\n"


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        ("a: [unclosed", "invalid YAML in -: "),
        ("- a list\n", "- must contain a YAML mapping, not list"),
        ("when: 2024-01-01\n", "- must hold plain JSON-compatible data"),
        ("1: one\n", "- must hold plain JSON-compatible data"),
    ],
)
def test_edit_metadata_rejects_bad_input(playground: Playground, stdin: str, message: str) -> None:
    worker, _ = playground.create_worker("builder")
    worker.set_static_metadata({"kept": True})

    assert run_fails("worker", "edit_metadata", "builder", "--set", "-", stdin=stdin).startswith(
        message
    )
    worker.refresh_from_db()
    assert worker.static_metadata == {"kept": True}


def test_edit_metadata_errors(playground: Playground, tmp_path: Path) -> None:
    playground.create_worker("builder")

    assert run_fails("worker", "edit_metadata", "ghost").startswith("no worker has the name")
    missing = tmp_path / "missing.yaml"
    assert run_fails("worker", "edit_metadata", "builder", "--set", str(missing)).startswith(
        f"cannot read {missing}: "
    )


def test_disable_needs_a_worker(db: None) -> None:
    run_usage_error("worker", "disable")
