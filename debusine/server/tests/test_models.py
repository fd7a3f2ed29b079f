"""Tests of model behaviour: defaults, tokens, permissions, work request state changes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.db.models import CharField
from django.utils import timezone

from debusine import tasks
from debusine.protocol import artifacts as artifact_wire
from debusine.protocol import work_requests as work_request_wire
from debusine.server.db import models
from debusine.server.db.models import (
    ArtifactRelationType,
    FileStore,
    Scope,
    TaskType,
    Token,
    User,
    Worker,
    WorkRequestResult,
    WorkRequestStatus,
    Workspace,
    WorkspaceRoles,
    hash_token_key,
)
from debusine.server.work_requests import transitions
from debusine.server.work_requests.transitions import WorkRequestError
from debusine.testing.playground import FileSpec, Playground


def test_fresh_database_has_defaults(db: None) -> None:
    workspace = Workspace.objects.select_related("scope").get(name="System")
    assert workspace.scope.name == "debusine"
    assert workspace.public
    store = FileStore.objects.get(name="Default")
    assert store.backend == "Local"
    assert list(store.scopes.all()) == [workspace.scope]


def test_token_stores_only_hash(db: None) -> None:
    token, key = Token.objects.create_with_key(enabled=True)
    assert len(key) == 64
    assert token.hash == hash_token_key(key)
    assert key not in str(Token.objects.filter(pk=token.pk).values().get())
    assert Token.objects.get_by_key(key) == token
    assert Token.objects.get_by_key("0" * 64) is None


def test_token_usable_honours_enabled_and_expiry(db: None) -> None:
    token, _ = Token.objects.create_with_key(enabled=False)
    assert not token.is_usable()
    token.enable()
    assert token.is_usable()
    token.expire_at = timezone.now() - timedelta(seconds=1)
    token.save()
    assert not token.is_usable()
    assert token not in Token.objects.usable()


def test_worker_names_are_unique_slugs(db: None) -> None:
    first = Worker.objects.create_from_fqdn("builder.example.org", "external")
    second = Worker.objects.create_from_fqdn("builder.example.org", "external")
    third = Worker.objects.create_from_fqdn("builder.example.org", "external")
    assert [first.name, second.name, third.name] == [
        "builder-example-org",
        "builder-example-org-2",
        "builder-example-org-3",
    ]


def test_worker_static_metadata_wins(db: None) -> None:
    worker = Worker.objects.create(name="w")
    worker.set_dynamic_metadata({"system:architectures": ["amd64"], "noop:version": 1})
    worker.set_static_metadata({"system:architectures": ["amd64", "i386"]})
    assert worker.metadata() == {"system:architectures": ["amd64", "i386"], "noop:version": 1}


def test_private_workspace_visible_only_with_role(playground: Playground) -> None:
    private = playground.create_workspace("secret")
    outsider = playground.create_user("bob")
    member = playground.create_user("carol")
    playground.grant(member, private, WorkspaceRoles.VIEWER)
    assert not private.can_display(outsider)
    assert private.can_display(member)
    assert not private.can_create_work_requests(member)
    assert private not in Workspace.objects.can_display(outsider)
    assert private in Workspace.objects.can_display(member)
    assert playground.workspace in Workspace.objects.can_display(outsider)


def test_work_request_life_cycle(
    playground: Playground, start_work_request: Callable[..., models.WorkRequest]
) -> None:
    user = playground.create_user()
    work_request = playground.create_work_request(created_by=user)
    assert work_request.status == WorkRequestStatus.PENDING
    assert work_request.result == ""
    start_work_request(work_request)
    assert work_request.status == WorkRequestStatus.RUNNING
    assert transitions.complete(work_request, "success", {"runtime_statistics": {"duration": 1}})
    work_request.refresh_from_db()
    assert work_request.status == "completed"
    assert work_request.result == "success"
    assert work_request.duration is not None
    # A second completion changes nothing.
    assert not transitions.complete(work_request, "failure")
    work_request.refresh_from_db()
    assert work_request.result == "success"


def test_result_requires_finished_status(playground: Playground) -> None:
    user = playground.create_user()
    with pytest.raises(IntegrityError):
        playground.create_work_request(created_by=user, result="success")


def test_dependants_unblock_on_success_and_abort_on_failure(playground: Playground) -> None:
    user = playground.create_user()
    first = playground.create_work_request(created_by=user)
    then = playground.create_work_request(created_by=user, status=WorkRequestStatus.BLOCKED)
    then.dependencies.add(first)
    transitions.complete(first, "success")
    then.refresh_from_db()
    assert then.status == WorkRequestStatus.PENDING

    failing = playground.create_work_request(created_by=user)
    doomed = playground.create_work_request(created_by=user, status=WorkRequestStatus.BLOCKED)
    doomed.dependencies.add(failing)
    transitions.complete(failing, "failure")
    doomed.refresh_from_db()
    assert doomed.status == WorkRequestStatus.ABORTED


def test_retry_supersedes_and_takes_over_dependants(playground: Playground) -> None:
    user = playground.create_user()
    failed = playground.create_work_request(created_by=user)
    dependant = playground.create_work_request(created_by=user, status=WorkRequestStatus.BLOCKED)
    dependant.dependencies.add(failed)
    transitions.complete(failed, "failure")
    dependant.refresh_from_db()
    assert dependant.status == WorkRequestStatus.ABORTED

    aborted_first = playground.create_work_request(created_by=user)
    waiting = playground.create_work_request(created_by=user, status=WorkRequestStatus.BLOCKED)
    waiting.dependencies.add(aborted_first)
    transitions.abort(aborted_first, user)
    new = transitions.retry(aborted_first)
    assert new.supersedes == aborted_first
    assert new.status == WorkRequestStatus.PENDING
    assert list(new.reverse_dependencies.all()) == [waiting]
    assert list(waiting.dependencies.all()) == [new]
    assert not aborted_first.reverse_dependencies.exists()
    with pytest.raises(WorkRequestError):
        transitions.retry(aborted_first)


def test_cannot_retry_success(playground: Playground) -> None:
    user = playground.create_user()
    work_request = playground.create_work_request(created_by=user)
    transitions.complete(work_request, "success")
    assert not transitions.can_retry(work_request)
    with pytest.raises(WorkRequestError):
        transitions.retry(work_request)


def test_file_store_total_size_follows_trigger(playground: Playground) -> None:
    from debusine.server.db.models import FileInStore

    store = FileStore.objects.get(name="Default")
    artifact = playground.create_artifact(files=[FileSpec("a.txt", b"hello")])
    file = artifact.files.get()
    FileInStore.objects.create(store=store, file=file)
    store.refresh_from_db()
    assert store.total_size == 5
    FileInStore.objects.filter(store=store, file=file).delete()
    store.refresh_from_db()
    assert store.total_size == 0


def test_collection_item_names_unique_only_while_active(playground: Playground) -> None:
    from debusine.server.db.models import Collection, CollectionItem

    collection = Collection.objects.create(
        name="bookworm", category="debian:suite", workspace=playground.workspace
    )
    artifact = playground.create_artifact(category="debian:source-package")

    def add() -> CollectionItem:
        return CollectionItem.objects.create(
            name="hello_1.0",
            child_type="a",
            category=artifact.category,
            parent_collection=collection,
            parent_category=collection.category,
            artifact=artifact,
        )

    first = add()
    with pytest.raises(IntegrityError), transaction.atomic():
        add()
    first.removed_at = timezone.now()
    first.save()
    second = add()
    assert CollectionItem.objects.filter(name="hello_1.0").count() == 2
    assert second.removed_at is None


def test_collection_names_starting_with_underscore_are_reserved(playground: Playground) -> None:
    from debusine.server.db.models import Collection

    Collection.objects.create(
        name="_", category="debusine:task-history", workspace=playground.workspace
    )
    with pytest.raises(IntegrityError):
        Collection.objects.create(
            name="_private", category="debian:suite", workspace=playground.workspace
        )


def test_database_choices_match_the_wire_and_task_enumerations() -> None:
    # One definition, the wire protocol's, for the tasks and the database columns.
    assert tasks.TaskType is work_request_wire.TaskType is TaskType
    for name, enum in (
        ("task_type", TaskType),
        ("status", WorkRequestStatus),
        ("result", WorkRequestResult),
    ):
        field = models.WorkRequest._meta.get_field(name)
        assert isinstance(field, CharField)
        choices = field.choices
        assert choices is not None
        assert [choice[0] for choice in choices] == [member.value for member in enum]
    # The Django-free packages cannot import these choices: keep the copies equal.
    assert set(ArtifactRelationType.values) == {
        member.value for member in artifact_wire.ArtifactRelationType
    }


def test_expiry_falls_back_to_the_workspace_default(playground: Playground) -> None:
    user = playground.create_user()
    artifact = playground.create_artifact()
    work_request = playground.create_work_request(created_by=user)
    # The default workspace keeps everything forever.
    assert artifact.expire_at is None
    assert work_request.expire_at is None
    assert not work_request.is_expired()

    workspace = playground.workspace
    workspace.default_expiration_delay = timedelta(days=2)
    workspace.save()
    artifact.refresh_from_db()
    work_request.refresh_from_db()
    assert artifact.expire_at == artifact.created_at + timedelta(days=2)
    assert work_request.expire_at == work_request.created_at + timedelta(days=2)
    assert work_request.is_expired(work_request.created_at + timedelta(days=3))

    # An own delay wins, and an own zero delay keeps it forever.
    artifact.expiration_delay = timedelta(hours=1)
    work_request.expiration_delay = timedelta(0)
    assert artifact.expire_at == artifact.created_at + timedelta(hours=1)
    assert work_request.expire_at is None


def test_roles_imply_weaker_roles_and_scope_owners_hold_all(playground: Playground) -> None:
    from debusine.server.db.models import ScopeRoles

    private = playground.create_workspace("private")
    other_private = playground.create_workspace("other-private")
    owner = playground.create_user("owner")
    viewer = playground.create_user("viewer")
    scope_owner = playground.create_user("scope-owner")
    playground.grant(owner, private, WorkspaceRoles.OWNER)
    playground.grant(viewer, private, WorkspaceRoles.VIEWER)
    playground.scope.grant_role(playground.create_group("owners", [scope_owner]), ScopeRoles.OWNER)

    def with_role(user: User, role: str) -> set[str]:
        names = Workspace.objects.with_role(user, role).values_list("name", flat=True)
        return set(names) & {"private", "other-private"}

    assert with_role(owner, WorkspaceRoles.OWNER) == {"private"}
    assert with_role(owner, WorkspaceRoles.CONTRIBUTOR) == {"private"}
    assert with_role(owner, WorkspaceRoles.VIEWER) == {"private"}
    assert with_role(viewer, WorkspaceRoles.VIEWER) == {"private"}
    assert with_role(viewer, WorkspaceRoles.CONTRIBUTOR) == set()
    assert with_role(scope_owner, WorkspaceRoles.OWNER) == {"private", "other-private"}
    assert other_private.can_configure(scope_owner)
    assert not other_private.can_display(owner)
    # A scope owner of another scope owns nothing here.
    elsewhere = Scope.objects.create(name="elsewhere")
    stranger = playground.create_user("stranger")
    elsewhere.grant_role(playground.create_group("x", [stranger], scope=elsewhere), "owner")
    assert with_role(stranger, WorkspaceRoles.VIEWER) == set()
