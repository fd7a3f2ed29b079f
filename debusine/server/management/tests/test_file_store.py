"""Tests of `debusine-admin file_store`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from debusine.server.db.models import File, FileInStore, FileStore
from debusine.server.management.tests.helpers import run, run_fails, run_usage_error


def test_create_local_store_from_yaml_configuration(db: None, tmp_path: Path) -> None:
    configuration = tmp_path / "store.yaml"
    configuration.write_text(f"base_directory: {tmp_path / 'store'}\n")

    out = run(
        "file_store",
        "create",
        "archive",
        "Local",
        "--configuration",
        str(configuration),
        "--no-instance-wide",
        "--soft-max-size",
        "100",
        "--max-size",
        "200",
    )

    assert out == "Created file store archive\n"
    store = FileStore.objects.get(name="archive")
    assert store.backend == "Local"
    assert store.configuration == {"base_directory": str(tmp_path / "store")}
    assert (store.instance_wide, store.soft_max_size, store.max_size) == (False, 100, 200)


def test_create_memory_store_from_json_on_stdin(db: None) -> None:
    run(
        "file_store",
        "create",
        "scratch",
        "Memory",
        "--configuration",
        "-",
        stdin='{"name": "scratch"}',
    )

    store = FileStore.objects.get(name="scratch")
    assert (store.backend, store.configuration, store.instance_wide) == (
        "Memory",
        {"name": "scratch"},
        True,
    )


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["Default", "Memory"], None, "file store 'Default' already exists"),
        (["new", "Cloud"], None, "unknown backend 'Cloud': expected one of Local, S3, Memory"),
        (["new", "Local"], None, "configuration: a Local store needs a base_directory"),
        (
            ["new", "Local", "--configuration", "-"],
            "base_directory: relative/dir",
            "configuration: base_directory must be an absolute path",
        ),
        (
            ["new", "Local", "--configuration", "-"],
            "base_directory: /srv/store\nbucket: x",
            "configuration: unknown keys for a Local store: bucket",
        ),
        (
            ["new", "Memory", "--configuration", "-"],
            "[1, 2]",
            "- must contain a YAML mapping, not list",
        ),
        (
            ["new", "Memory", "--configuration", "-"],
            "name: 3",
            "configuration: name must be a string",
        ),
        (
            ["new", "Memory", "--soft-max-size", "10", "--max-size", "5"],
            None,
            "soft_max_size: must not be larger than max_size",
        ),
    ],
)
def test_create_store_errors_change_nothing(
    db: None, args: list[str], stdin: str | None, message: str
) -> None:
    assert run_fails("file_store", "create", *args, stdin=stdin) == message
    assert list(FileStore.objects.values_list("name", flat=True)) == ["Default"]


def test_create_store_usage_errors(db: None) -> None:
    run_usage_error("file_store", "create", "new")
    run_usage_error("file_store", "create", "new", "Memory", "--max-size", "-1")


def test_list_stores_with_total_size(db: None) -> None:
    run("file_store", "create", "scratch", "Memory")
    default = FileStore.objects.get(name="Default")
    for size in (10, 32):
        FileInStore.objects.create(
            store=default, file=File.objects.get_or_create_by_hash(bytes([size]) * 32, size)
        )

    lines = run("file_store", "list").splitlines()
    listed = yaml.safe_load(run("file_store", "list", "--yaml"))

    assert lines[0].split() == [
        "NAME",
        "BACKEND",
        "INSTANCE-WIDE",
        "SOFT",
        "MAX",
        "SIZE",
        "MAX",
        "SIZE",
        "TOTAL",
        "SIZE",
    ]
    assert lines[1].split() == ["Default", "Local", "yes", "-", "-", "42"]
    assert lines[2].split() == ["scratch", "Memory", "yes", "-", "-", "0"]
    assert listed[0] == {
        "name": "Default",
        "backend": "Local",
        "instance_wide": True,
        "soft_max_size": None,
        "max_size": None,
        "total_size": 42,
        "configuration": {},
    }


def test_create_s3_store_with_a_provider_account(db: None) -> None:
    from debusine.server.db.models import Asset, AssetCategory

    account = Asset.objects.create(
        category=AssetCategory.CLOUD_PROVIDER_ACCOUNT, data={"name": "aws-main"}
    )
    run(
        "file_store",
        "create",
        "cloud",
        "S3",
        "--provider-account",
        "aws-main",
        "--configuration",
        "-",
        stdin="bucket_name: artifacts\nsecret_access_key: s3cr3t\naccess_key_id: key\n",
    )

    store = FileStore.objects.get(name="cloud")
    assert store.provider_account == account
    shown = yaml.safe_load(run("file_store", "show", "cloud", "--yaml"))
    assert shown["configuration"]["secret_access_key"] == "<hidden>"
    assert shown["provider_account"] == account.pk
    assert run_fails("file_store", "create", "x", "Local", "--provider-account", "nope") == (
        "cloud provider account 'nope' does not exist"
    )


def test_delete_store_safety(db: None) -> None:
    from debusine.server.db.models import FileStoreInScope, Scope

    store = FileStore.objects.create(name="spare", backend="Memory")
    other = FileStore.objects.create(name="other", backend="Memory")
    file = File.objects.create(sha256=bytes(32), size=1)
    FileInStore.objects.create(store=store, file=file)
    link = FileStoreInScope.objects.create(
        scope=Scope.objects.get(name="debusine"), file_store=store
    )

    assert "used by scope(s) debusine" in run_fails("file_store", "delete", "spare")
    link.delete()
    assert "still holds 1 file(s)" in run_fails("file_store", "delete", "spare")
    assert "in no other store" in run_fails("file_store", "delete", "spare", "--force")
    FileInStore.objects.create(store=other, file=file)
    assert run("file_store", "delete", "spare", "--force", "--dry-run") == (
        "Would delete file store spare and forget 1 file(s) in it\n"
    )
    assert FileStore.objects.filter(name="spare").exists()
    assert run("file_store", "delete", "spare", "--force") == (
        "Deleted file store spare (1 file(s) removed from it)\n"
    )
    assert not FileStore.objects.filter(name="spare").exists()
    assert run_fails("file_store", "delete", "Default") == (
        "the Default file store cannot be deleted"
    )
