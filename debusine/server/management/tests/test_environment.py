"""Tests of `debusine-admin environment`."""

from __future__ import annotations

from debusine.server.db.models import Collection, CollectionItem, WorkRequest
from debusine.server.management.tests.helpers import run, run_fails
from debusine.server.work_requests import transitions
from debusine.testing.playground import Playground


def test_create_makes_an_mmdebstrap_work_request(playground: Playground) -> None:
    out = run(
        "environment",
        "create",
        "bookworm",
        "--architecture",
        "amd64",
        "--mirror",
        "http://mirror.example/debian",
    )

    work_request = WorkRequest.objects.get(pk=int(out))
    assert (work_request.task_type, work_request.task_name) == ("Worker", "mmdebstrap")
    assert work_request.task_data == {
        "bootstrap_options": {"architecture": "amd64", "variant": "buildd"},
        "bootstrap_repositories": [
            {
                "mirror": "http://mirror.example/debian",
                "suite": "bookworm",
                "components": ["main"],
            }
        ],
    }
    assert work_request.created_by.username == "_system"
    assert work_request.event_reactions_json == {
        "on_success": [
            {
                "action": "update-collection-with-artifacts",
                "collection": "debian@debian:environments",
                "variables": {"codename": "bookworm"},
                "artifact_filters": {"category": "debian:system-tarball"},
            }
        ]
    }
    assert Collection.objects.filter(
        name="debian", category="debian:environments", workspace=playground.workspace
    ).exists()


def test_the_built_tarball_is_filed_and_listed(playground: Playground) -> None:
    out = run("environment", "create", "trixie", "--architecture", "arm64", "--variant", "apt")
    work_request = WorkRequest.objects.get(pk=int(out))
    assert work_request.task_data["bootstrap_options"]["variant"] == "apt"
    tarball = playground.create_artifact(
        category="debian:system-tarball",
        data={"codename": "trixie", "architecture": "arm64"},
        created_by_work_request=work_request,
    )

    transitions.complete(work_request, "success")

    item = CollectionItem.objects.get(artifact=tarball)
    assert item.name == "tarball:trixie:arm64"
    listing = run("environment", "list")
    assert "tarball:trixie:arm64" in listing and str(tarball.pk) in listing
    assert "tarball:trixie:arm64" in run("environment", "list", "--yaml", "--vendor", "debian")
    assert run("environment", "list", "--vendor", "ubuntu").count("\n") == 1


def test_create_in_another_vendor_and_workspace(playground: Playground) -> None:
    workspace = playground.create_workspace("team")
    run(
        "environment",
        "create",
        "noble",
        "--architecture",
        "amd64",
        "--vendor",
        "ubuntu",
        "--workspace",
        "team",
        "--mirror",
        "http://archive.ubuntu.com/ubuntu",
    )
    assert Collection.objects.filter(name="ubuntu", workspace=workspace).exists()
    assert WorkRequest.objects.get().workspace == workspace


def test_invalid_task_data_is_refused(playground: Playground) -> None:
    message = run_fails(
        "environment", "create", "bookworm", "--architecture", "amd64", "--variant", "bogus"
    )
    assert "variant" in message
    assert not WorkRequest.objects.exists()
    assert not Collection.objects.exists()


def test_add_files_an_existing_tarball(playground: Playground) -> None:
    first = playground.create_artifact(
        category="debian:system-tarball", data={"codename": "bookworm", "architecture": "amd64"}
    )
    second = playground.create_artifact(
        category="debian:system-tarball", data={"codename": "bookworm", "architecture": "amd64"}
    )

    assert run("environment", "add", str(first.pk)).strip() == "tarball:bookworm:amd64"
    assert run("environment", "add", str(second.pk)).strip() == "tarball:bookworm:amd64"
    assert (
        run("environment", "add", str(second.pk), "--variant", "sbuild").strip()
        == "tarball:bookworm:amd64:sbuild:"
    )

    active = CollectionItem.objects.filter(
        parent_collection__name="debian", removed_at__isnull=True
    ).order_by("name")
    assert [(item.name, item.artifact_id) for item in active] == [
        ("tarball:bookworm:amd64", second.pk),
        ("tarball:bookworm:amd64:sbuild:", second.pk),
    ]
    replaced = CollectionItem.objects.get(artifact=first)
    assert replaced.removed_at is not None


def test_add_refuses_what_is_not_an_environment(playground: Playground) -> None:
    log = playground.create_artifact(category="debusine:test", data={})

    assert "accepts debian:system-" in run_fails("environment", "add", str(log.pk))
    assert "does not exist" in run_fails("environment", "add", "999999")
