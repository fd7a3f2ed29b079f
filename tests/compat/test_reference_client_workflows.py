"""
The real Debusine 0.11.3 client's workflow commands against our server, unchanged:
`create-workflow-template` (a workspace owner) and `create-workflow`, then what it started
seen through `show-work-request`. Refusals (a contributor creating a template, bad workflow
data) come back as the problems the client prints.
"""

from __future__ import annotations

import uuid

import pytest

from tests.compat.conftest import ReferenceCli, write_client_config
from tests.integration.conftest import LiveServer

pytestmark = pytest.mark.compat


@pytest.fixture
def owner_cli(reference_cli: ReferenceCli, debusine_server: LiveServer) -> ReferenceCli:
    """The reference client as an owner of the System workspace (a new user each time)."""
    username = f"owner-{uuid.uuid4().hex[:8]}"
    token = debusine_server.instance.create_contributor(username)
    debusine_server.admin("workspace", "grant_role", "System", "owner", f"{username}-contributors")
    home = reference_cli.home.parent / "owner-home"
    write_client_config(home, api_url=debusine_server.api_url, token=token)
    return ReferenceCli(client=reference_cli.client, server=debusine_server, home=home)


def test_templates_and_workflows_through_the_reference_client(
    owner_cli: ReferenceCli, reference_cli: ReferenceCli
) -> None:
    name = f"noops-{uuid.uuid4().hex[:8]}"
    created = owner_cli.ok("create-workflow-template", name, "noop", stdin="children: 2\n").yaml()
    assert created["result"] == "success", created

    started = reference_cli.ok("create-workflow", name, stdin="result: false\n").yaml()
    assert started["result"] == "success", started
    workflow_id = started["workflow_id"]

    shown = reference_cli.ok("show-work-request", str(workflow_id)).yaml()
    assert shown["task_type"] == "Workflow"
    assert shown["task_name"] == "noop"
    assert shown["task_data"] == {"children": 2, "result": False}


def test_a_contributor_cannot_create_templates(reference_cli: ReferenceCli) -> None:
    run = reference_cli.run("create-workflow-template", "nope", "noop", stdin="{}\n")

    assert run.returncode != 0 or "failure" in run.stdout, run.describe()
    assert "Permission denied" in run.stdout + run.stderr, run.describe()


def test_bad_workflow_data_is_refused_with_the_reason(owner_cli: ReferenceCli) -> None:
    name = f"strict-{uuid.uuid4().hex[:8]}"
    owner_cli.ok("create-workflow-template", name, "noop", stdin="{}\n")

    run = owner_cli.run("create-workflow", name, stdin="nonsense: 1\n")

    assert "Cannot create workflow" in run.stdout + run.stderr, run.describe()
    assert "nonsense" in run.stdout + run.stderr, run.describe()
