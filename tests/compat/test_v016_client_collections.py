"""
Debian's `debusine` client 0.16 against our server: the commands 0.16 added for collections
(`collection …`, `collection relation …`, `archive package …`, `archive token …`), lookups in
their 0.16 shape, and the per-workspace workflow templates (`workflow-template …`, `workflow
start`).

`task-config pull/push` run too (0.12 clients call the same endpoint; the keys 0.16 added are
left out for them, which the API tests check).

Each client run costs seconds (a namespace, a chroot and a Python start), so every test walks
through a whole story with one server state, as a user would.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import yaml

from tests.compat.conftest import V016Cli
from tests.integration.conftest import LiveServer

pytestmark = pytest.mark.compat

SUITE_DATA = "components: [main]\narchitectures: [amd64]\n"


def add_bare_items(
    server: LiveServer, suite: str, items: dict[str, tuple[str, dict[str, str]]]
) -> None:
    """
    Add bare items to `suite@debian:suite` of System (name -> (category, data)): no client
    command adds items (workflows do), so the server's own shell does, as a workflow would.
    """
    code = (
        "import json\n"
        "from debusine.server.db.models import Collection, CollectionItem\n"
        f"suite = Collection.objects.get(name={suite!r}, category='debian:suite', "
        "workspace__name='System')\n"
        f"for name, (category, data) in json.loads({json.dumps(items)!r}).items():\n"
        "    CollectionItem.objects.create(name=name, child_type='b', category=category,"
        " parent_collection=suite, parent_category=suite.category, data=data)\n"
    )
    server.admin("shell", "-c", code)


def test_collections_items_relations_tokens_and_lookups(
    v016_owner_cli: V016Cli, cli: V016Cli
) -> None:
    owner = v016_owner_cli
    tag = uuid.uuid4().hex[:6]
    sid, base = f"sid-{tag}", f"base-{tag}"

    # collection create / list / show / manage.
    created = owner.ok(
        "collection", "create", "--yaml", f"{sid}@debian:suite", stdin=SUITE_DATA
    ).yaml()
    assert (created["name"], created["category"]) == (sid, "debian:suite")
    assert created["data"] == {"components": ["main"], "architectures": ["amd64"]}
    owner.ok("collection", "create", "debian:suite", base, stdin="{}\n")
    listed = cli.ok("collection", "list", "--yaml").yaml()
    assert {sid, base} <= {entry["name"] for entry in listed}
    # The rich output dereferences links.webui_self and webui_category.
    shown = cli.ok("collection", "show", f"{sid}@debian:suite")
    assert f"/debusine/System/collection/debian:suite/{sid}/" in shown.stdout
    managed = owner.ok(
        "collection",
        "manage",
        "--yaml",
        "debian:suite",
        base,
        "--rename",
        f"{base}-x",
        "--full-history-retention-period",
        "7",
    ).yaml()
    assert (managed["name"], managed["full_history_retention_period"]) == (f"{base}-x", 7)
    base = f"{base}-x"
    refused = cli.run("collection", "manage", "debian:suite", base, "--rename", "nope")
    assert refused.returncode != 0, refused.describe()
    assert "Traceback" not in refused.stderr, refused.describe()

    # collection relation edit (ETag read, then PUT with If-Match) and list.
    owner.ok(
        "collection",
        "relation",
        "edit",
        f"{sid}@debian:suite",
        "suite-requires",
        "--append",
        f"{base}@debian:suite",
    )
    relations = cli.ok(
        "collection", "relation", "list", "--yaml", "--from", f"{sid}@debian:suite"
    ).yaml()
    assert [
        (entry["target_collection"]["name"], entry["type"], entry["position"])
        for entry in relations
    ] == [(base, "suite-requires", 1)]
    cli.ok("collection", "relation", "list", "--type", "suite-requires")

    # archive package list / show / remove on items the suite holds.
    add_bare_items(
        owner.server,
        sid,
        {
            "hello_1.0": ("debian:source-package", {"package": "hello", "version": "1.0"}),
            "hello_1.0_amd64": (
                "debian:binary-package",
                {"package": "hello", "version": "1.0", "architecture": "amd64"},
            ),
            "world_2.0": ("debian:source-package", {"package": "world", "version": "2.0"}),
        },
    )
    packages = cli.ok("archive", "package", "list", "--yaml", "--suite", sid).yaml()
    assert [entry["name"] for entry in packages] == ["hello_1.0", "hello_1.0_amd64", "world_2.0"]
    item = cli.ok("archive", "package", "show", "--yaml", "--suite", sid, "hello_1.0").yaml()
    assert item["data"] == {"package": "hello", "version": "1.0"}
    removed = owner.ok("archive", "package", "remove", "--suite", sid, "hello")
    assert "hello_1.0" in removed.stdout + removed.stderr, removed.describe()
    remaining = cli.ok("archive", "package", "list", "--yaml", "--suite", sid).yaml()
    assert [entry["name"] for entry in remaining] == ["hello_1.0_amd64", "world_2.0"]

    # Lookups in the 0.16 shape: an item, and a collection (YAML and rich output).
    found = cli.ok(
        "collection", "lookup-single", "--yaml", f"{sid}@debian:suite/name:world_2.0"
    ).yaml()
    assert found["result_type"] == "bare"
    assert found["collection_item"]["data"] == {"package": "world", "version": "2.0"}
    assert found["parent_collection_lookup"] == f"{sid}@debian:suite"
    collection = cli.ok(
        "collection",
        "lookup-single",
        "--yaml",
        "--expect-type",
        "collection",
        f"{sid}@debian:suite",
    ).yaml()
    assert collection["result_type"] == "collection"
    assert collection["collection_info"] == {"name": sid, "category": "debian:suite"}
    cli.ok("collection", "lookup-single", f"{sid}@debian:suite/name:world_2.0")
    missing = cli.run("collection", "lookup-single", f"{sid}@debian:suite/name:nothing")
    assert missing.returncode != 0, missing.describe()
    assert "No matches" in missing.stdout + missing.stderr, missing.describe()
    assert "Traceback" not in missing.stderr, missing.describe()

    # archive token grant / list / revoke on the suite.
    granted = owner.ok(
        "archive",
        "token",
        "grant",
        "--yaml",
        "--suite",
        sid,
        "--external-username",
        "alice",
        "viewer",
    ).yaml()
    assert granted["token_type"] == "external-user"
    assert granted["token_key"]
    tokens = owner.ok("archive", "token", "list", "--yaml", "--suite", sid).yaml()
    assert [(entry["username"], entry["role"]) for entry in tokens] == [("alice", "viewer")]
    owner.ok("archive", "token", "revoke", "--suite", sid, granted["token_hash"], "viewer")
    assert owner.ok("archive", "token", "list", "--yaml", "--suite", sid).yaml() in ([], None)

    # collection delete: refused while it holds items, unless forced.
    kept = owner.run("collection", "delete", "debian:suite", sid)
    assert kept.returncode != 0, kept.describe()
    assert "not empty" in kept.stdout + kept.stderr, kept.describe()
    owner.ok("collection", "delete", "debian:suite", base)
    owner.ok("collection", "delete", "--force", "debian:suite", sid)
    remaining_names = {
        entry["name"] for entry in cli.ok("collection", "list", "--yaml").yaml() or []
    }
    assert not {sid, base} & remaining_names


def test_workflow_templates_per_workspace_and_workflow_start(
    v016_owner_cli: V016Cli, cli: V016Cli
) -> None:
    owner = v016_owner_cli
    name = f"noops-{uuid.uuid4().hex[:6]}"

    created = owner.ok(
        "workflow-template",
        "create",
        "--yaml",
        "noop",
        name,
        stdin="static_parameters: {children: 2}\nruntime_parameters: {result: any}\n",
    ).yaml()
    assert (created["name"], created["task_name"]) == (name, "noop")
    assert created["static_parameters"] == {"children": 2}
    assert created["runtime_parameters"] == {"result": "any"}
    # Rich output dereferences links.webui_self (a KeyError without it); it prints the URL
    # only as a terminal hyperlink.
    listed = cli.ok("workflow-template", "list")
    assert name in listed.stdout, listed.describe()
    cli.ok("workflow-template", "show", name)
    assert name in [
        entry["name"] for entry in cli.ok("workflow-template", "list", "--yaml").yaml()
    ]
    shown = cli.ok("workflow-template", "show", "--yaml", name).yaml()
    assert shown["id"] == created["id"]

    # workflow start with the template: users set only what runtime_parameters allow.
    started = cli.ok("workflow", "start", "--yaml", name, stdin="result: false\n").yaml()
    assert started["task_type"] == "Workflow"
    assert started["task_data"] == {"children": 2, "result": False}
    refused = cli.run("workflow", "start", name, stdin="children: 5\n")
    assert refused.returncode != 0, refused.describe()
    assert "children" in refused.stdout + refused.stderr, refused.describe()
    assert "Traceback" not in refused.stderr, refused.describe()

    # workflow-template manage (PATCH of the whole object read), then delete.
    managed = owner.ok(
        "workflow-template", "manage", "--yaml", name, "--rename", f"{name}-b"
    ).yaml()
    assert managed["name"] == f"{name}-b"
    owner.ok("workflow-template", "delete", f"{name}-b")
    gone = cli.run("workflow-template", "show", f"{name}-b")
    assert gone.returncode != 0, gone.describe()
    assert "Traceback" not in gone.stderr, gone.describe()


def test_task_config_pull_and_push(v016_owner_cli: V016Cli, tmp_path: Path) -> None:
    owner = v016_owner_cli
    name = f"tc-{uuid.uuid4().hex[:6]}"
    owner.ok("collection", "create", "debusine:task-configuration", name, stdin="{}\n")
    workdir = tmp_path / "checkout"

    # An empty collection checks out as a manifest alone.
    owner.ok("task-config", "pull", name, "--workdir", str(workdir))
    assert (workdir / "MANIFEST").is_file()

    # Entries (with a 0.16 key) in a file of the checkout, pushed, then pulled back.
    (workdir / "builds.yaml").write_text(
        yaml.safe_dump(
            [
                {"task_type": "Worker", "task_name": "sbuild", "default_values": {"binnmu": None}},
                {"template": "common", "provide_tags": ["site:fast"]},
            ]
        )
    )
    owner.ok("task-config", "push", "--workdir", str(workdir))
    fresh = tmp_path / "fresh"
    owner.ok("task-config", "pull", name, "--workdir", str(fresh))
    entries = yaml.safe_load((fresh / "builds.yaml").read_text())
    assert [entry.get("task_name") or entry.get("template") for entry in entries] == [
        "sbuild",
        "common",
    ]
    assert entries[1]["provide_tags"] == ["site:fast"]

    # A second push of the same checkout changes nothing.
    again = owner.ok("task-config", "push", "--workdir", str(fresh))
    assert "0 added, 0 updated, 0 removed, 2 unchanged" in again.stdout + again.stderr, (
        again.describe()
    )
