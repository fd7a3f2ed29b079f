"""Tests of `debusine-admin worker_pool` and `asset create_cloud_provider_account`."""

from __future__ import annotations

import yaml

from debusine.server.db.models import Asset, WorkerPool
from debusine.server.management.tests.helpers import run, run_fails, run_usage_error
from debusine.testing.playground import Playground

LOCAL_SPEC = "provider_type: local\napi_url: http://127.0.0.1:1/api\n"
SECRET = "very-secret-key-value"


def create_aws_account(name: str = "ec2") -> str:
    return run(
        "asset",
        "create_cloud_provider_account",
        name,
        "aws",
        "--credentials",
        "-",
        stdin=f"access_key_id: AKIA1\nsecret_access_key: {SECRET}\n",
    ).strip()


def test_account_credentials_are_stored_but_never_printed(db: None) -> None:
    asset_id = create_aws_account()

    asset = Asset.objects.get(pk=int(asset_id))
    assert asset.data["credentials"]["secret_access_key"] == SECRET
    listing = run("asset", "list_cloud_provider_accounts", "--yaml")
    assert SECRET not in listing
    assert yaml.safe_load(listing)[0]["credentials"] == {
        "access_key_id": "(hidden)",
        "secret_access_key": "(hidden)",
    }
    assert SECRET not in run("asset", "list_cloud_provider_accounts")


def test_account_with_missing_credentials_is_refused(db: None) -> None:
    message = run_fails(
        "asset", "create_cloud_provider_account", "h", "hetzner", "--credentials", "-", stdin="{}"
    )
    assert message == "invalid cloud provider account: credentials.api_token: Field required"
    assert not Asset.objects.exists()
    run("asset", "create_cloud_provider_account", "here", "local")
    assert "already exists" in run_fails("asset", "create_cloud_provider_account", "here", "local")


def test_create_list_show_enable_disable_delete(playground: Playground) -> None:
    run("asset", "create_cloud_provider_account", "here", "local")

    output = run(
        "worker_pool",
        "create",
        "spare",
        "--provider-account",
        "here",
        "--architectures",
        "amd64,i386",
        "--tags",
        "fast",
        "--specifications",
        "-",
        "--scope",
        playground.scope.name,
        "--ephemeral",
        stdin=LOCAL_SPEC,
    )
    assert output == "Created worker pool spare\n"
    pool = WorkerPool.objects.get(name="spare")
    assert pool.architectures == ["amd64", "i386"]
    assert pool.ephemeral and pool.enabled and pool.scope == playground.scope

    [listed] = yaml.safe_load(run("worker_pool", "list", "--yaml"))
    assert listed["name"] == "spare"
    assert listed["limits"]["max_active_instances"] == 1
    assert "spare" in run("worker_pool", "list")
    shown = yaml.safe_load(run("worker_pool", "show", "spare", "--yaml"))
    assert shown["instances"] == []
    assert shown["runtime_this_month_seconds"] == 0
    assert "runtime_this_month_seconds: 0" in run("worker_pool", "show", "spare")

    assert run("worker_pool", "disable", "spare") == "Disabled worker pool spare\n"
    assert not WorkerPool.objects.get(name="spare").enabled
    assert "disabled" in run_fails("worker_pool", "launch", "spare", "1")
    run("worker_pool", "enable", "spare")
    assert WorkerPool.objects.get(name="spare").enabled
    assert run("worker_pool", "delete", "spare") == "Deleted worker pool spare\n"
    assert not WorkerPool.objects.exists()


def test_bad_specifications_are_refused_with_the_field_and_the_reason(db: None) -> None:
    run("asset", "create_cloud_provider_account", "here", "local")
    create_aws_account()

    def create(*extra: str, spec: str = LOCAL_SPEC, account: str = "here") -> str:
        return run_fails(
            "worker_pool",
            "create",
            "p",
            "--provider-account",
            account,
            "--architectures",
            "amd64",
            "--specifications",
            "-",
            *extra,
            stdin=spec,
        )

    assert "specifications: api_url: Field required" in create(spec="provider_type: local\n")
    assert "specifications: frobnicate: Extra inputs are not permitted" in create(
        spec=LOCAL_SPEC + "frobnicate: 1\n"
    )
    assert "does not match the account's 'aws'" in create(account="ec2")
    assert "launch_templates" in create(
        spec="provider_type: aws\napi_url: http://x/api\nlaunch_templates: []\n", account="ec2"
    )
    assert "no cloud provider account is named 'nope'" in create(account="nope")
    assert not WorkerPool.objects.exists()


def test_bad_limits_are_refused(db: None, tmp_path: object) -> None:
    run("asset", "create_cloud_provider_account", "here", "local")
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    limits = tmp_path / "limits.yaml"
    limits.write_text("max_active_instances: 1\nmin_active_instances: 2\n")
    message = run_fails(
        "worker_pool",
        "create",
        "p",
        "--provider-account",
        "here",
        "--architectures",
        "amd64",
        "--specifications",
        "-",
        "--limits",
        str(limits),
        stdin=LOCAL_SPEC,
    )
    assert "min_active_instances (2) is above max_active_instances (1)" in message
    run_usage_error("worker_pool", "create", "p")


def test_terminate_and_drain_refuse_workers_outside_pools(playground: Playground) -> None:
    playground.create_worker("static")
    assert "belongs to no worker pool" in run_fails("worker_pool", "terminate", "static")
    assert "belongs to no worker pool" in run_fails("worker_pool", "drain", "static")
    assert "no worker pool is named 'x'" in run_fails("worker_pool", "show", "x")


def test_scope_budget_is_set_shown_and_removed(playground: Playground) -> None:
    scope = playground.scope.name
    assert run("worker_pool", "scope_budget", scope) == f"{scope}: no monthly budget\n"
    assert run("worker_pool", "scope_budget", scope, "7200") == (
        f"{scope}: 0 of 7200 s used this month (available)\n"
    )
    assert run("worker_pool", "scope_budget", scope, "0") == (
        f"{scope}: 0 of 0 s used this month (used up: its pending work makes no pool grow)\n"
    )
    run("asset", "create_cloud_provider_account", "here", "local")
    run(
        "worker_pool",
        "create",
        "mine",
        "--provider-account",
        "here",
        "--architectures",
        "amd64",
        "--specifications",
        "-",
        "--scope",
        scope,
        stdin=LOCAL_SPEC,
    )
    shown = yaml.safe_load(run("worker_pool", "show", "mine", "--yaml"))
    assert shown["pool_budget"] == "no monthly budget"
    assert shown["scope_budget"] == (
        "0 of 0 s used this month (used up: its pending work makes no pool grow)"
    )
    assert "whole number" in run_fails("worker_pool", "scope_budget", scope, "lots")
    assert run("worker_pool", "scope_budget", scope, "none") == f"{scope}: no monthly budget\n"
    assert "does not exist" in run_fails("worker_pool", "scope_budget", "nowhere")
