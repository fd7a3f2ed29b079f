"""
Web pages through Django's test client: what each page shows, who may see it (private
workspaces are 404s to outsiders), the actions behind their buttons, and a bounded number of
queries per page whatever the amount of data.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from debusine.protocol.work_requests import TaskType, WorkRequestResult, WorkRequestStatus
from debusine.server.db.models import (
    Artifact,
    ArtifactRelation,
    Asset,
    AssetCategory,
    Token,
    User,
    WorkerPool,
    WorkRequest,
    Workspace,
)
from debusine.server.db.models.worker_pools import record_runtime
from debusine.server.db.models.workspaces import WorkspaceRoles
from debusine.server.scheduler.passes import run_scheduling_pass
from debusine.server.web.templatetags.web import duration
from debusine.server.work_requests import transitions
from debusine.testing.playground import FileSpec, Playground

PASSWORD = "correct horse battery staple"

#: Queries of every page of a workspace for a signed-in user: the request's savepoint and its
#: release, the session, the user, and the workspace with the user's permissions on it.
BASE_QUERIES = 5


@pytest.fixture(autouse=True)
def directories(file_directories: Path) -> Path:
    """Artifact contents go to a temporary Default store."""
    return file_directories


@pytest.fixture
def alice(playground: Playground) -> User:
    """A contributor to the default workspace, with a password."""
    user = playground.create_user("alice")
    user.set_password(PASSWORD)
    user.save()
    playground.grant(user, playground.workspace)
    return user


@pytest.fixture
def signed_in(client: Client, alice: User) -> Client:
    client.force_login(alice)
    return client


def ws_url(workspace: Workspace, rest: str = "") -> str:
    return f"/{workspace.scope.name}/{workspace.name}/{rest}"


def wr_url(work_request: WorkRequest, rest: str = "") -> str:
    return ws_url(work_request.workspace, f"work-request/{work_request.pk}/{rest}")


def text(response: Any) -> str:
    return str(response.content.decode())


def csrf_client() -> Client:
    return Client(enforce_csrf_checks=True)


def csrf_token(client: Client, url: str) -> str:
    page = text(client.get(url))
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert match is not None, page
    return match[1]


# --- Base: assets, sign in and out, tokens ----------------------------------------------------


def test_stylesheet_is_served_with_an_etag(client: Client, db: None) -> None:
    response = client.get("/-/static/debusine.css")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/css")
    again = client.get("/-/static/debusine.css", HTTP_IF_NONE_MATCH=response["ETag"])
    assert again.status_code == 304
    assert client.get("/-/static/..%2Fsettings.py").status_code == 404
    assert client.get("/-/static/missing.css").status_code == 404


def test_sign_in_with_csrf_then_sign_out(alice: User) -> None:
    client = csrf_client()
    token = csrf_token(client, "/-/signin/")
    refused = client.post(
        "/-/signin/", {"username": "alice", "password": "wrong"} | {"csrfmiddlewaretoken": token}
    )
    assert refused.status_code == 200
    assert "did not match" in text(refused)
    without_csrf = client.post("/-/signin/", {"username": "alice", "password": PASSWORD})
    assert without_csrf.status_code == 403

    response = client.post(
        "/-/signin/?next=/-/user/tokens/",
        {
            "username": "alice",
            "password": PASSWORD,
            "csrfmiddlewaretoken": token,
            "next": "/-/user/tokens/",
        },
    )
    assert response.status_code == 302
    assert response["Location"] == "/-/user/tokens/"
    assert "alice: tokens" in text(client.get("/"))

    assert client.get("/-/signout/").status_code == 405
    token = csrf_token(client, "/")
    assert client.post("/-/signout/", {"csrfmiddlewaretoken": token}).status_code == 302
    assert "alice: tokens" not in text(client.get("/"))


def test_tokens_page_needs_a_session(client: Client, db: None) -> None:
    response = client.get("/-/user/tokens/")
    assert response.status_code == 302
    assert response["Location"].startswith("/-/signin/?next=")


def test_create_a_token_shown_once_disable_enable_delete(signed_in: Client, alice: User) -> None:
    response = signed_in.post("/-/user/tokens/", {"comment": "laptop"})
    assert response.status_code == 200
    key = re.search(r'id="new-token-key">([0-9a-f]{64})<', text(response))
    assert key is not None
    token = Token.objects.get_by_key(key[1])
    assert (
        token is not None and token.user == alice and token.enabled and token.comment == "laptop"
    )
    # Never shown again.
    assert key[1] not in text(signed_in.get("/-/user/tokens/"))

    assert signed_in.post(f"/-/user/tokens/{token.pk}/disable/").status_code == 302
    token.refresh_from_db()
    assert not token.enabled
    signed_in.post(f"/-/user/tokens/{token.pk}/enable/")
    token.refresh_from_db()
    assert token.enabled
    signed_in.post(f"/-/user/tokens/{token.pk}/delete/")
    assert not Token.objects.filter(pk=token.pk).exists()


def test_another_users_token_is_a_404(signed_in: Client, playground: Playground) -> None:
    bob = playground.create_user("bob")
    token, _ = Token.objects.create_with_key(user=bob, enabled=True)
    assert signed_in.post(f"/-/user/tokens/{token.pk}/delete/").status_code == 404
    assert signed_in.post(f"/-/user/tokens/{token.pk}/bogus/").status_code == 404
    assert Token.objects.filter(pk=token.pk).exists()


def test_token_comment_too_long_is_a_clear_error(signed_in: Client, alice: User) -> None:
    response = signed_in.post("/-/user/tokens/", {"comment": "x" * 101})
    assert response.status_code == 400
    assert "longer than 100" in text(response)
    assert not Token.objects.filter(user=alice).exists()


# --- Visibility -------------------------------------------------------------------------------


@pytest.fixture
def private(playground: Playground) -> Workspace:
    return playground.create_workspace("secret", public=False)


def test_private_workspace_is_a_404_to_outsiders(
    client: Client, playground: Playground, private: Workspace, alice: User
) -> None:
    work_request = playground.create_work_request(created_by=alice, workspace=private)
    artifact = playground.create_artifact(workspace=private)
    urls = [
        ws_url(private),
        ws_url(private, "work-request/"),
        wr_url(work_request),
        ws_url(private, f"artifact/{artifact.pk}/"),
    ]
    for url in urls:
        assert client.get(url).status_code == 404, url
    client.force_login(alice)  # a contributor elsewhere, not here
    for url in urls:
        assert client.get(url).status_code == 404, url
    assert client.post(wr_url(work_request, "abort/")).status_code == 404
    assert "secret" not in text(client.get("/"))

    playground.grant(alice, private, WorkspaceRoles.VIEWER)
    for url in urls:
        assert client.get(url).status_code == 200, url
    assert "secret" in text(client.get("/"))


def test_work_request_of_another_workspace_is_a_404(
    client: Client, playground: Playground, alice: User
) -> None:
    other = playground.create_workspace("other", public=True)
    work_request = playground.create_work_request(created_by=alice, workspace=other)
    playground.workspace.public = True
    playground.workspace.save()
    assert (
        client.get(ws_url(playground.workspace, f"work-request/{work_request.pk}/")).status_code
        == 404
    )
    assert client.get(wr_url(work_request)).status_code == 200


# --- Work requests ----------------------------------------------------------------------------


def test_api_url_of_a_work_request_resolves(
    signed_in: Client, playground: Playground, alice: User
) -> None:
    from debusine.testing.playground import api_client

    work_request = playground.create_work_request(created_by=alice)
    token = playground.create_user_token(alice)
    url = api_client(token).get(f"/api/1.0/work-request/{work_request.pk}/").json()["url"]
    response = signed_in.get(url)
    assert response.status_code == 200
    assert f"Work request {work_request.pk}: noop" in text(response)


def test_list_filters_and_keyset_pages(
    signed_in: Client, playground: Playground, alice: User, django_assert_max_num_queries: Any
) -> None:
    worker, _ = playground.create_worker("builder")
    rows = [
        playground.create_work_request(
            created_by=alice,
            task_name="sleep" if index % 2 else "noop",
            status=WorkRequestStatus.COMPLETED if index % 3 == 0 else WorkRequestStatus.PENDING,
            result=WorkRequestResult.SUCCESS if index % 3 == 0 else WorkRequestResult.NONE,
            worker=worker if index == 7 else None,
        )
        for index in range(120)
    ]
    url = ws_url(playground.workspace, "work-request/")
    with django_assert_max_num_queries(6):
        first = signed_in.get(url)
    assert first.status_code == 200
    shown = [int(n) for n in re.findall(r'work-request/(\d+)/">\d+<', text(first))]
    assert shown == [row.pk for row in reversed(rows)][:50]
    older = re.search(r'id="older" href="\?before=(\d+)"', text(first))
    assert older is not None
    second = signed_in.get(url + f"?before={older[1]}")
    shown2 = [int(n) for n in re.findall(r'work-request/(\d+)/">\d+<', text(second))]
    assert shown2 == [row.pk for row in reversed(rows)][50:100]
    newer = re.search(r'id="newer" href="\?after=(\d+)"', text(second))
    assert newer is not None
    back = signed_in.get(url + f"?after={newer[1]}")
    assert re.findall(r'work-request/(\d+)/">\d+<', text(back)) == [str(pk) for pk in shown]

    sleeps = text(signed_in.get(url + "?task=sleep&status=completed"))
    listed = {int(n) for n in re.findall(r'work-request/(\d+)/">\d+<', sleeps)}
    assert listed == {row.pk for index, row in enumerate(rows) if index % 2 and index % 3 == 0}
    by_worker = text(signed_in.get(url + "?worker=builder"))
    assert re.findall(r'work-request/(\d+)/">\d+<', by_worker) == [str(rows[7].pk)]


def test_list_bad_filters_are_clear_errors(signed_in: Client, playground: Playground) -> None:
    url = ws_url(playground.workspace, "work-request/")
    for query, message in [
        ("?status=bogus", "Unknown status"),
        ("?workflow=x", "is not a work request id"),
        ("?before=abc", "is not a work request id"),
    ]:
        response = signed_in.get(url + query)
        assert response.status_code == 400
        assert message in text(response)


def test_workflow_filter_lists_its_children(
    signed_in: Client, playground: Playground, alice: User
) -> None:
    workflow = playground.create_work_request(
        created_by=alice, task_type=TaskType.WORKFLOW, task_name="noop"
    )
    child = playground.create_work_request(created_by=alice, parent=workflow)
    playground.create_work_request(created_by=alice)
    page = text(
        signed_in.get(ws_url(playground.workspace, f"work-request/?workflow={workflow.pk}"))
    )
    assert re.findall(r'work-request/(\d+)/">\d+<', page) == [str(child.pk)]


def test_detail_shows_data_timeline_artifacts_and_logs(
    signed_in: Client, playground: Playground, alice: User, django_assert_max_num_queries: Any
) -> None:
    worker, _ = playground.create_worker("builder")
    work_request = playground.create_work_request(
        created_by=alice,
        task_data={"result": True, "marker": "task-data-marker"},
        status=WorkRequestStatus.COMPLETED,
        result=WorkRequestResult.SUCCESS,
        worker=worker,
        dynamic_task_data={"dynamic": "dynamic-marker"},
        output_data_json={"output": "output-marker"},
    )
    logs = playground.create_artifact(
        category="debusine:work-request-debug-logs",
        created_by_work_request=work_request,
        files=[FileSpec("cmd-output.log", b"hello\n"), FileSpec("stages.log", b"x\n")],
        complete=True,
    )
    made = playground.create_artifact(created_by_work_request=work_request)
    with django_assert_max_num_queries(9):
        response = signed_in.get(wr_url(work_request))
    page = text(response)
    for marker in ("task-data-marker", "dynamic-marker", "output-marker", "builder", "Timeline"):
        assert marker in page
    assert f"artifact/{made.pk}/" in page
    assert f"artifact/{logs.pk}/file/cmd-output.log" in page
    assert 'id="retry"' not in page  # it succeeded


def test_workflow_detail_is_a_tree(
    signed_in: Client, playground: Playground, alice: User, django_assert_max_num_queries: Any
) -> None:
    workflow = playground.create_work_request(
        created_by=alice, task_type=TaskType.WORKFLOW, task_name="noop"
    )
    sub = playground.create_work_request(
        created_by=alice, task_type=TaskType.WORKFLOW, task_name="noop", parent=workflow
    )
    first = playground.create_work_request(created_by=alice, parent=workflow, task_name="sleep")
    deep = [playground.create_work_request(created_by=alice, parent=sub) for _ in range(30)]
    with django_assert_max_num_queries(9):
        page = text(signed_in.get(wr_url(workflow)))
    tree = page[page.index('id="workflow-tree"') :]
    order = [int(n) for n in re.findall(r'work-request/(\d+)/">\d+<', tree)]
    assert order == [sub.pk, *[row.pk for row in deep], first.pk]
    assert 'class="depth-2"' in tree


def test_retry_a_failed_work_request(
    signed_in: Client, playground: Playground, alice: User
) -> None:
    failed = playground.create_work_request(
        created_by=alice, status=WorkRequestStatus.COMPLETED, result=WorkRequestResult.FAILURE
    )
    page = text(signed_in.get(wr_url(failed)))
    assert 'id="retry"' in page
    response = signed_in.post(wr_url(failed, "retry/"))
    assert response.status_code == 302
    failed.refresh_from_db()
    new = failed.superseded_by
    assert response["Location"] == wr_url(new)
    assert new.status == WorkRequestStatus.PENDING
    again = signed_in.post(wr_url(failed, "retry/"))
    assert again.status_code == 400
    assert "retried, once" in text(again)


def test_retry_needs_csrf(alice: User, playground: Playground) -> None:
    failed = playground.create_work_request(
        created_by=alice, status=WorkRequestStatus.COMPLETED, result=WorkRequestResult.FAILURE
    )
    client = csrf_client()
    client.force_login(alice)
    assert client.post(wr_url(failed, "retry/")).status_code == 403
    token = csrf_token(client, wr_url(failed))
    assert client.post(wr_url(failed, "retry/"), {"csrfmiddlewaretoken": token}).status_code == 302


def test_abort_and_who_may(client: Client, playground: Playground, alice: User) -> None:
    playground.workspace.public = True
    playground.workspace.save()
    pending = playground.create_work_request(created_by=alice)
    bob = playground.create_user("bob")
    assert client.post(wr_url(pending, "abort/")).status_code == 403
    client.force_login(bob)
    assert 'id="abort"' not in text(client.get(wr_url(pending)))
    refused = client.post(wr_url(pending, "abort/"))
    assert refused.status_code == 403
    assert "cannot retry or abort" in text(refused)
    client.force_login(alice)
    assert 'id="abort"' in text(client.get(wr_url(pending)))
    assert client.post(wr_url(pending, "abort/")).status_code == 302
    pending.refresh_from_db()
    assert pending.status == WorkRequestStatus.ABORTED and pending.aborted_by == alice
    assert client.post(wr_url(pending, "abort/")).status_code == 400


def test_review_a_manual_unblock_work_request(
    signed_in: Client, playground: Playground, alice: User, django_assert_max_num_queries: Any
) -> None:
    step = playground.create_work_request(
        created_by=alice, status=WorkRequestStatus.BLOCKED, unblock_strategy="manual"
    )
    transitions.manual_unblock(step, alice, notes="first <look>")
    with django_assert_max_num_queries(BASE_QUERIES + 5):
        page = text(signed_in.get(wr_url(step)))
    review = page[page.index('id="review"') :]
    assert 'id="review-form"' in review and 'id="review-accept"' in review
    assert re.search(r"<b>alice</b>.*first &lt;look&gt;", review, re.S)

    assert signed_in.post(wr_url(step, "unblock/"), {"action": "maybe"}).status_code == 400
    assert signed_in.post(wr_url(step, "unblock/"), {"notes": "  "}).status_code == 400
    noted = signed_in.post(wr_url(step, "unblock/"), {"notes": "fine", "action": ""})
    assert noted.status_code == 302
    accepted = signed_in.post(wr_url(step, "unblock/"), {"action": "accept"})
    assert accepted.status_code == 302 and accepted["Location"] == wr_url(step)
    step.refresh_from_db()
    assert step.status == WorkRequestStatus.PENDING
    log = transitions.manual_unblock_log(step)
    assert [(entry["notes"], entry["action"]) for entry in log] == [
        ("first <look>", None),
        ("fine", None),
        (None, "accept"),
    ]
    page = text(signed_in.get(wr_url(step)))
    assert 'id="review-form"' not in page and "accepted" in page
    again = signed_in.post(wr_url(step, "unblock/"), {"action": "reject"})
    assert again.status_code == 400 and "only blocked" in text(again)


def test_who_may_review_and_csrf(client: Client, playground: Playground, alice: User) -> None:
    playground.workspace.public = True
    playground.workspace.save()
    bob = playground.create_user("bob")
    step = playground.create_work_request(
        created_by=bob, status=WorkRequestStatus.BLOCKED, unblock_strategy="manual"
    )
    assert client.post(wr_url(step, "unblock/"), {"action": "accept"}).status_code == 403
    client.force_login(bob)  # its creator, with no role in the workspace
    assert 'id="review-form"' not in text(client.get(wr_url(step)))
    refused = client.post(wr_url(step, "unblock/"), {"action": "accept"})
    assert refused.status_code == 403 and "cannot review" in text(refused)
    strict = csrf_client()
    strict.force_login(alice)
    assert strict.post(wr_url(step, "unblock/"), {"action": "reject"}).status_code == 403
    token = csrf_token(strict, wr_url(step))
    rejected = strict.post(
        wr_url(step, "unblock/"), {"action": "reject", "csrfmiddlewaretoken": token}
    )
    assert rejected.status_code == 302
    step.refresh_from_db()
    assert step.status == WorkRequestStatus.ABORTED and step.aborted_by == alice
    ordinary = playground.create_work_request(created_by=alice, status=WorkRequestStatus.BLOCKED)
    assert 'id="review"' not in text(strict.get(wr_url(ordinary)))


def test_why_is_this_not_running(
    signed_in: Client, playground: Playground, alice: User, django_assert_max_num_queries: Any
) -> None:
    pending = playground.create_work_request(
        created_by=alice,
        task_name="noop",
        task_data={"result": True, "host_architecture": "arm64"},
    )
    playground.create_connected_worker(
        "amd64-only", metadata={"noop:version": 1, "system:architectures": ["amd64"]}
    )
    playground.create_connected_worker(
        "arm", metadata={"noop:version": 1, "system:architectures": ["arm64"]}
    )
    playground.create_connected_worker(
        "old", metadata={"noop:version": 0, "system:architectures": ["arm64"]}
    )
    offline, _ = playground.create_worker("offline")
    offline.dynamic_metadata = {"noop:version": 1, "system:architectures": ["arm64"]}
    offline.save()
    playground.create_worker("disabled", enabled=False)
    with django_assert_max_num_queries(10):
        page = text(signed_in.get(wr_url(pending)))
    section = page[page.index('id="why-pending"') :]
    assert "Idle workers that can take it" in section and "arm<" not in section.split("Idle")[0]
    assert re.search(r"<b>amd64-only</b>: it does not run arm64", section)
    assert re.search(r"<b>old</b>: it reports noop:version = 0, the server&#x27;s is 1", section)
    assert re.search(r"<b>offline</b>: it is not connected", section)
    assert re.search(r"<b>disabled</b>: ", section)


def test_workspace_home_lists_recent_things(
    signed_in: Client, playground: Playground, alice: User, django_assert_max_num_queries: Any
) -> None:
    for _ in range(30):
        playground.create_work_request(created_by=alice)
    workflow = playground.create_work_request(created_by=alice, task_type=TaskType.WORKFLOW)
    artifact = playground.create_artifact()
    with django_assert_max_num_queries(BASE_QUERIES + 4):
        page = text(signed_in.get(ws_url(playground.workspace)))
    assert f"work-request/{workflow.pk}/" in page
    assert f"artifact/{artifact.pk}/" in page
    with django_assert_max_num_queries(BASE_QUERIES):
        assert signed_in.get("/").status_code == 200
    with django_assert_max_num_queries(BASE_QUERIES + 1):
        assert signed_in.get(f"/{playground.scope.name}/").status_code == 200
    assert signed_in.get("/nosuchscope/").status_code == 404


# --- Artifacts and files ----------------------------------------------------------------------


def stored(playground: Playground, files: dict[str, bytes], **fields: Any) -> Artifact:
    artifact = playground.create_artifact(
        files=[FileSpec(path, contents) for path, contents in files.items()],
        complete=True,
        **fields,
    )
    for contents in files.values():
        if contents:
            playground.store_contents(contents)
    return artifact


def test_artifact_detail_relations_both_ways(
    signed_in: Client, playground: Playground, django_assert_max_num_queries: Any
) -> None:
    artifact = stored(playground, {"a.txt": b"a\n"}, data={"marker": "data-marker"})
    target = playground.create_artifact(category="debian:source-package")
    source = playground.create_artifact(category="debian:binary-package")
    ArtifactRelation.objects.create(artifact=artifact, target=target, type="extends")
    ArtifactRelation.objects.create(artifact=source, target=artifact, type="built-using")
    with django_assert_max_num_queries(BASE_QUERIES + 4):
        page = text(signed_in.get(ws_url(playground.workspace, f"artifact/{artifact.pk}/")))
    assert "data-marker" in page
    assert f"artifact/{target.pk}/" in page and "extends" in page
    assert f"artifact/{source.pk}/" in page and "built-using" in page
    assert f"artifact/{artifact.pk}/file/a.txt" in page


def test_file_viewer_numbers_lines_and_searches(
    signed_in: Client, playground: Playground, django_assert_max_num_queries: Any
) -> None:
    log = b"".join(
        f"line {n} {'ERROR' if n % 10 == 0 else 'ok'}\n".encode() for n in range(1, 101)
    )
    artifact = stored(playground, {"build.log": log})
    url = ws_url(playground.workspace, f"artifact/{artifact.pk}/file/build.log")
    with django_assert_max_num_queries(BASE_QUERIES + 4):
        page = text(signed_in.get(url))
    assert 'id="L1"' in page and 'id="L100"' in page
    assert 'href="#L42"' in page
    assert f"artifact/{artifact.pk}/download/build.log" in page
    found = text(signed_in.get(url + "?search=error"))
    assert "10 matching lines of 100" in found
    assert 'id="L20"' in found and 'id="L21"' not in found


def test_file_viewer_caps_the_size(
    signed_in: Client, playground: Playground, settings: Any
) -> None:
    settings.DEBUSINE_WEB_FILE_VIEW_MAX_SIZE = 100
    artifact = stored(playground, {"big.log": b"0123456789\n" * 50})
    page = text(
        signed_in.get(ws_url(playground.workspace, f"artifact/{artifact.pk}/file/big.log"))
    )
    assert 'id="truncated"' in page
    assert 'id="L9"' in page and 'id="L11"' not in page


def test_file_viewer_offers_binary_files_as_downloads(
    signed_in: Client, playground: Playground
) -> None:
    artifact = stored(playground, {"blob.bin": bytes(range(256)) * 4})
    page = text(
        signed_in.get(ws_url(playground.workspace, f"artifact/{artifact.pk}/file/blob.bin"))
    )
    assert "is not shown here" in page
    assert (
        signed_in.get(
            ws_url(playground.workspace, f"artifact/{artifact.pk}/file/none")
        ).status_code
        == 404
    )


def test_file_viewer_shows_a_debs_control_data(
    signed_in: Client, playground: Playground, tmp_path: Path
) -> None:
    import subprocess

    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: hello-web\nVersion: 1.0-1\nArchitecture: all\nMaintainer: A <a@example.org>\n"
        "Description: test package\n long description line\n"
    )
    deb = tmp_path / "hello-web_1.0-1_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-b", str(root), str(deb)],
        check=True,
        capture_output=True,
    )
    artifact = stored(playground, {deb.name: deb.read_bytes()})
    page = text(
        signed_in.get(ws_url(playground.workspace, f"artifact/{artifact.pk}/file/{deb.name}"))
    )
    assert 'id="deb-control"' in page
    assert "<dt>Package</dt>" in page and "hello-web" in page
    assert "long description line" in page


# --- Workers and queue ------------------------------------------------------------------------


def test_workers_list_states_and_current_work(
    client: Client,
    playground: Playground,
    alice: User,
    start_work_request: Any,
    django_assert_max_num_queries: Any,
) -> None:
    playground.workspace.public = True
    playground.workspace.save()
    busy = playground.create_connected_worker("busy")
    playground.create_connected_worker("idle")
    playground.create_worker("off", enabled=False)
    running = start_work_request(playground.create_work_request(created_by=alice), busy)
    with django_assert_max_num_queries(4):
        page = text(client.get("/-/workers/"))
    assert re.search(rf'id="worker-busy">.*?state-busy.*?work-request/{running.pk}/', page, re.S)
    assert re.search(r'id="worker-idle">.*?state-idle', page, re.S)
    assert re.search(r'id="worker-off">.*?state-disabled', page, re.S)
    assert "Disable" not in page


def test_superuser_disables_and_enables_a_worker(
    client: Client, playground: Playground, alice: User
) -> None:
    worker = playground.create_connected_worker("w1")
    client.force_login(alice)
    assert client.post("/-/workers/w1/disable/").status_code == 403
    admin = playground.create_user("admin", is_superuser=True)
    client.force_login(admin)
    assert client.post("/-/workers/w1/disable/").status_code == 302
    worker.refresh_from_db()
    assert not worker.is_enabled()
    assert client.post("/-/workers/w1/enable/").status_code == 302
    worker.token.refresh_from_db()  # type: ignore[union-attr]
    assert worker.is_enabled()
    assert client.post("/-/workers/nope/enable/").status_code == 404


def test_superuser_pauses_and_resumes_a_worker(
    client: Client,
    playground: Playground,
    alice: User,
    django_capture_on_commit_callbacks: Any,
) -> None:
    worker = playground.create_connected_worker("w1")
    admin = playground.create_user("admin", is_superuser=True)
    client.force_login(alice)
    assert client.post("/-/workers/w1/pause/").status_code == 403
    client.force_login(admin)
    assert client.post("/-/workers/w1/pause/").status_code == 302
    waiting = playground.create_work_request(created_by=alice)

    run_scheduling_pass()

    waiting.refresh_from_db()
    assert waiting.worker is None  # a paused worker takes no new work
    page = text(client.get("/-/workers/"))
    assert re.search(r'id="worker-w1">.*?state-paused.*?/-/workers/w1/resume/', page, re.S)
    assert re.search(r"<b>w1</b>: it is paused", text(client.get(wr_url(waiting))))
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post("/-/workers/w1/resume/").status_code == 302
    waiting.refresh_from_db()
    assert waiting.worker == worker  # the pass the resume asked for
    pool = make_pool("pool")
    pool_worker(playground, pool, "pool-001")
    refused = client.post("/-/workers/pool-001/pause/")
    assert refused.status_code == 400 and "belongs to a worker pool" in text(refused)


def make_pool(name: str, **fields: Any) -> WorkerPool:
    account = Asset.objects.filter(data__name="local").first() or Asset.objects.create(
        category=AssetCategory.CLOUD_PROVIDER_ACCOUNT,
        data={"provider_type": "local", "name": "local", "configuration": {}, "credentials": {}},
    )
    return WorkerPool.objects.create(
        name=name,
        provider_account=account,
        architectures=["amd64", "i386"],
        specifications={"provider_type": "local", "api_url": "http://127.0.0.1:1/api"},
        **fields,
    )


def pool_worker(
    playground: Playground, pool: WorkerPool, name: str, *, state: str = "idle", **fields: Any
) -> Any:
    """A worker of `pool` whose instance is `launching`, `idle` or `draining`, or `stopped`."""
    worker = playground.create_connected_worker(name)
    worker.worker_pool = pool
    if state != "stopped":
        worker.instance_created_at = timezone.now() - timedelta(hours=1)
        worker.worker_pool_data = {"instance_id": f"i-{name}"}
    if state == "launching":
        worker.activation_token, _ = Token.objects.create_with_key(enabled=True)
    if state == "draining":
        worker.draining_at = timezone.now()
    for field, value in fields.items():
        setattr(worker, field, value)
    worker.save()
    return worker


def pool_page_data(
    playground: Playground, alice: User, count: int, prefix: str = "pool"
) -> WorkerPool:
    """`count` pools, each with an instance of every state, one of them busy, and history."""
    first = None
    for index in range(count):
        number = f"{prefix}{index}"
        pool = make_pool(
            number, limits={"max_active_instances": 5, "target_max_seconds_per_month": 66000}
        )
        first = first or pool
        for state in ("launching", "idle", "draining", "stopped"):
            pool_worker(playground, pool, f"{number}-{state}", state=state)
        busy = pool_worker(playground, pool, f"{number}-busy")
        work_request = playground.create_work_request(created_by=alice)
        work_request.worker = busy
        work_request.status = WorkRequestStatus.RUNNING
        work_request.started_at = timezone.now()
        work_request.save()
        now = timezone.now()
        for reason in ("idle", "idle", "scale-in"):
            record_runtime(
                pool,
                worker=busy,
                instance_id=f"i-old-{reason}",
                started_at=now - timedelta(minutes=30),
                reason=reason,
                boot_seconds=40.0,
                work_requests=2,
                now=now,
            )
        pool.counters = {
            "launches": 9,
            "launch_failures": 1,
            "terminated:idle": 2,
            "terminated:scale-in": 1,
        }
        pool.save()
    assert first is not None
    return first


def test_worker_pool_list_counts_instances_by_state(
    client: Client, playground: Playground, alice: User, django_assert_max_num_queries: Any
) -> None:
    pool_page_data(playground, alice, 1)
    with django_assert_max_num_queries(3):
        page = text(client.get("/-/worker-pools/"))
    row = re.search(r'id="pool-pool0">(.*?)</tr>', page, re.S)
    assert row is not None, page
    cells = row[1]
    assert "local" in cells and "amd64, i386" in cells
    assert re.search(r'class="active">4/5<', cells)  # stopped workers have no instance
    for state, count in (("launching", 1), ("busy", 1), ("idle", 1), ("draining", 1)):
        assert re.search(rf'class="{state}">{count}<', cells), state
    # Four live instances for an hour plus three ended ones of 30 minutes: 5 h 30 of 18 h
    # (the model's own sum says so too, unless the month began less than an hour ago).
    pool = WorkerPool.objects.get(name="pool0")
    assert re.search(r'class="runtime">5 h 30 min \(30% of the budget\)', cells) or (
        f'class="runtime">{duration(pool.runtime_this_month())}' in cells
    )
    # As many queries for more pools, workers and history.
    pool_page_data(playground, alice, 3, prefix="more")
    make_pool("empty", enabled=False)
    with django_assert_max_num_queries(3):
        page = text(client.get("/-/worker-pools/"))
    assert len(re.findall(r'<tr id="pool-', page)) == 5
    assert re.search(r'id="pool-empty">.*?state-disabled.*?class="active">0/1<', page, re.S)
    workers_page = text(client.get("/-/workers/"))
    assert 'href="/-/worker-pools/"' in workers_page
    assert 'href="/-/worker-pools/pool0/"' in workers_page


def test_worker_pool_detail_shows_workers_and_statistics(
    client: Client, playground: Playground, alice: User, django_assert_max_num_queries: Any
) -> None:
    playground.workspace.public = True
    playground.workspace.save()
    pool = pool_page_data(playground, alice, 1)
    with django_assert_max_num_queries(8):
        page = text(client.get(f"/-/worker-pools/{pool.name}/"))
    for state in ("launching", "idle", "draining", "stopped", "busy"):
        assert re.search(rf'id="worker-pool0-{state}">.*?state-{state}', page, re.S), state
    assert re.search(r'id="worker-pool0-busy">.*?i-pool0-busy.*?work-request/\d+/', page, re.S)
    assert re.search(
        r'id="reason-idle">.*?<td>2</td><td>2</td><td>1 h 00 min</td><td>40 s', page, re.S
    )
    assert 'id="reason-scale-in"' in page and 'id="reason-gone"' not in page
    assert re.search(r"<dt>Launches</dt><dd>9<", page)
    assert page.count("i-old-") == 3
    # As many queries with more pools, workers and history.
    pool_page_data(playground, alice, 2, prefix="more")
    for number in range(3):
        pool_worker(playground, pool, f"extra-{number}")
    with django_assert_max_num_queries(8):
        assert client.get(f"/-/worker-pools/{pool.name}/").status_code == 200
    assert client.get("/-/worker-pools/nope/").status_code == 404


def test_queue_status(
    client: Client, playground: Playground, alice: User, django_assert_max_num_queries: Any
) -> None:
    for arch in ("amd64", "amd64", "arm64"):
        playground.create_work_request(
            created_by=alice, task_data={"result": True, "host_architecture": arch}
        )
    playground.create_work_request(created_by=alice, status=WorkRequestStatus.BLOCKED)
    playground.create_connected_worker("w", concurrency=3)
    with django_assert_max_num_queries(5):
        page = text(client.get("/-/queue/"))
    assert re.search(r'id="pending-total">3<', page)
    assert re.search(r"<td>noop</td><td>amd64</td><td>2</td><td>0</td>", page)
    assert re.search(r"<td>noop</td><td>any</td><td>0</td><td>1</td>", page)
    assert "0 running on 3 slots of 1 connected worker" in page


# --- Recently failed, collections -------------------------------------------------------------


def test_recently_failed_and_bulk_retry(
    signed_in: Client, playground: Playground, alice: User, django_assert_max_num_queries: Any
) -> None:
    failed = [
        playground.create_work_request(
            created_by=alice,
            status=WorkRequestStatus.COMPLETED,
            result=result,
            completed_at=timezone.now(),
        )
        for result in (WorkRequestResult.FAILURE, WorkRequestResult.ERROR)
    ]
    playground.create_work_request(
        created_by=alice, status=WorkRequestStatus.COMPLETED, result=WorkRequestResult.SUCCESS
    )
    bob = playground.create_user("bob")
    other = playground.create_work_request(
        created_by=bob,
        workspace=playground.create_workspace("elsewhere", public=True),
        status=WorkRequestStatus.COMPLETED,
        result=WorkRequestResult.FAILURE,
    )
    url = ws_url(playground.workspace, "failed/")
    with django_assert_max_num_queries(BASE_QUERIES + 1):
        page = text(signed_in.get(url))
    listed = [int(n) for n in re.findall(r'work-request/(\d+)/">\d+<', page)]
    assert sorted(listed) == sorted(row.pk for row in failed)

    response = signed_in.post(
        url + "retry/", {"id": [str(row.pk) for row in failed] + [str(other.pk)]}
    )
    assert response.status_code == 302
    for row in failed:
        row.refresh_from_db()
        assert row.superseded_by.status == WorkRequestStatus.PENDING
    page = text(signed_in.get(url))
    assert "Retried 2 work request(s)." in page
    assert f"{other.pk} (not in this workspace)" in page
    assert re.findall(r'work-request/(\d+)/">\d+<', page) == []
    assert signed_in.post(url + "retry/", {"id": ["x"]}).status_code == 400


def test_bulk_retry_needs_a_user(client: Client, playground: Playground) -> None:
    playground.workspace.public = True
    playground.workspace.save()
    url = ws_url(playground.workspace, "failed/retry/")
    assert client.post(url, {"id": ["1"]}).status_code == 403


def test_collections_environments_and_suite(
    signed_in: Client, playground: Playground, django_assert_max_num_queries: Any
) -> None:
    from debusine.server.db.models import Collection, CollectionItem

    environments = Collection.objects.create(
        workspace=playground.workspace, name="debian", category="debian:environments"
    )
    suite = Collection.objects.create(
        workspace=playground.workspace, name="bookworm", category="debian:suite"
    )
    tarball = playground.create_artifact(category="debian:system-tarball")
    CollectionItem.objects.create(
        parent_collection=environments,
        parent_category=environments.category,
        name="tarball:bookworm:amd64",
        child_type="a",
        category="debian:system-tarball",
        artifact=tarball,
        data={"codename": "bookworm", "architecture": "amd64", "variant": "sbuild"},
    )
    CollectionItem.objects.create(
        parent_collection=suite,
        parent_category=suite.category,
        name="hello_1.0",
        child_type="b",
        category="debian:source-package",
        data={"package": "hello", "version": "1.0", "component": "main"},
    )
    with django_assert_max_num_queries(BASE_QUERIES + 1):
        page = text(signed_in.get(ws_url(playground.workspace, "collection/")))
    assert "debian:environments/debian/" in page and "debian:suite/bookworm/" in page
    with django_assert_max_num_queries(BASE_QUERIES + 2):
        page = text(
            signed_in.get(ws_url(playground.workspace, "collection/debian:environments/debian/"))
        )
    assert "tarball:bookworm:amd64" in page and "<th>variant</th>" in page
    assert "<td>sbuild</td>" in page and f"artifact/{tarball.pk}/" in page
    page = text(signed_in.get(ws_url(playground.workspace, "collection/debian:suite/bookworm/")))
    assert "hello_1.0" in page and "<td>main</td>" in page
    filtered = text(
        signed_in.get(ws_url(playground.workspace, "collection/debian:suite/bookworm/?name=nope"))
    )
    assert "hello_1.0" not in filtered
    missing = ws_url(playground.workspace, "collection/debian:suite/sid/")
    assert signed_in.get(missing).status_code == 404


# --- Logs: search across a workflow, status polling -------------------------------------------


def test_search_across_a_workflows_logs(
    signed_in: Client, playground: Playground, alice: User, django_assert_max_num_queries: Any
) -> None:
    workflow = playground.create_work_request(
        created_by=alice, task_type=TaskType.WORKFLOW, task_name="noop"
    )
    sub = playground.create_work_request(
        created_by=alice, task_type=TaskType.WORKFLOW, task_name="noop", parent=workflow
    )
    build = playground.create_work_request(created_by=alice, parent=sub, task_name="sleep")
    check = playground.create_work_request(created_by=alice, parent=workflow)
    outside = playground.create_work_request(created_by=alice)
    for work_request, contents in (
        (build, b"compiling\nerror: missing header foo.h\ndone\n"),
        (check, b"all good\n"),
        (outside, b"error: not in this workflow\n"),
    ):
        stored(
            playground,
            {"cmd-output.log": contents},
            category="debusine:work-request-debug-logs",
            created_by_work_request=work_request,
        )
    with django_assert_max_num_queries(BASE_QUERIES + 4):
        page = text(signed_in.get(wr_url(workflow, "logs/search/?q=ERROR")))
    assert "1 file with matches among 2 searched" in page
    assert "missing header foo.h" in page and "not in this workflow" not in page
    assert re.search(r'file/cmd-output.log#L2">2<', page)
    own = text(signed_in.get(wr_url(outside, "logs/search/?q=error")))
    assert "not in this workflow" in own


def test_status_endpoint_for_following_a_work_request(
    client: Client, playground: Playground, alice: User, private: Workspace
) -> None:
    playground.workspace.public = True
    playground.workspace.save()
    work_request = playground.create_work_request(created_by=alice)
    response = client.get(wr_url(work_request, "status/"))
    assert response.json() == {"status": "pending", "result": "", "completed_at": None}
    hidden = playground.create_work_request(created_by=alice, workspace=private)
    assert client.get(wr_url(hidden, "status/")).status_code == 404
    page = text(client.get(wr_url(work_request)))
    assert f'data-status-url="{wr_url(work_request, "status/")}"' in page
    assert "follow.js" in page


def test_live_log_keeps_frames_of_work_running_on_that_worker(
    signed_in: Client,
    playground: Playground,
    alice: User,
    start_work_request: Any,
    settings: Any,
) -> None:
    import uuid

    from debusine.server.work_requests import live_logs

    settings.DEBUSINE_REDIS_KEY_PREFIX = f"test-live-log-{uuid.uuid4().hex[:8]}"
    worker = playground.create_connected_worker("streamer")
    running = start_work_request(playground.create_work_request(created_by=alice), worker)
    other = playground.create_work_request(created_by=alice)
    seen: dict[int, bool] = {}
    for frame in (
        {"type": "log_data", "work_request_id": running.pk, "stream": "stdout", "data": "a\n"},
        {"type": "log_data", "work_request_id": other.pk, "stream": "stdout", "data": "no\n"},
        {"type": "log_data", "work_request_id": running.pk, "stream": "bogus", "data": "b\n"},
        {"type": "log_data", "work_request_id": "x", "data": "no\n"},
    ):
        live_logs.record_frame(worker.pk, frame, seen)
    assert seen == {running.pk: True, other.pk: False}

    url = wr_url(running, "live-log/")
    page = signed_in.get(url).json()
    assert page == {
        "pieces": [{"stream": "stdout", "data": "a\n"}, {"stream": "stdout", "data": "b\n"}],
        "next": 2,
        "ended": False,
        "status": "running",
    }
    live_logs.record_frame(
        worker.pk, {"type": "log_data_end", "work_request_id": running.pk, "exit_code": 0}, seen
    )
    assert signed_in.get(url + "?from=2").json()["ended"] is True
    assert signed_in.get(url + "?from=x").status_code == 400
    assert signed_in.get(wr_url(other, "live-log/")).json()["pieces"] == []
    assert 'id="live-log"' in text(signed_in.get(wr_url(running)))


def test_results_matrix_shows_the_latest_build_per_package_suite_and_architecture(
    signed_in: Client, playground: Playground, alice: User, django_assert_max_num_queries: Any
) -> None:
    hello = playground.create_artifact(category="debian:source-package", data={"name": "hello"})
    dpkg = playground.create_artifact(category="debian:source-package", data={"name": "dpkg"})
    bookworm = playground.create_artifact(
        category="debian:system-tarball", data={"codename": "bookworm"}
    )
    trixie = playground.create_artifact(
        category="debian:system-tarball", data={"codename": "trixie"}
    )

    def build(source: Artifact, environment: Artifact, architecture: str, **fields: Any) -> int:
        return playground.create_work_request(
            created_by=alice,
            task_name="sbuild",
            task_data={"host_architecture": architecture},
            dynamic_task_data={
                "input_source_artifact_id": source.pk,
                "environment_id": environment.pk,
            },
            **fields,
        ).pk

    done = {"status": WorkRequestStatus.COMPLETED}
    build(hello, bookworm, "amd64", result=WorkRequestResult.FAILURE, **done)
    latest = build(hello, bookworm, "amd64", result=WorkRequestResult.SUCCESS, **done)
    build(hello, trixie, "arm64", result=WorkRequestResult.FAILURE, **done)
    running = build(dpkg, bookworm, "amd64", status=WorkRequestStatus.RUNNING)
    playground.create_work_request(created_by=alice, task_name="sbuild")  # not assigned yet

    with django_assert_max_num_queries(BASE_QUERIES + 1):
        page = text(signed_in.get(ws_url(playground.workspace, "results/")))
    table = page[page.index('id="matrix"') :]
    assert "<th>bookworm<br>amd64</th><th>trixie<br>arm64</th>" in table
    rows = dict(re.findall(r"<tr><td>([a-z]+)</td>(.*?)</tr>", table, re.S))
    assert set(rows) == {"dpkg", "hello"}
    assert f"work-request/{latest}/" in rows["hello"] and "result-success" in rows["hello"]
    assert "result-failure" in rows["hello"]  # trixie/arm64
    assert f"work-request/{running}/" in rows["dpkg"] and "status-running" in rows["dpkg"]
