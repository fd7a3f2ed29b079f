"""Tests of lookup resolution (`debusine.server.lookups`)."""

from __future__ import annotations

from typing import Any

import pytest

from debusine.server.collections import CollectionManager
from debusine.server.db.models import Artifact, Collection, CollectionItem, User, WorkspaceChain
from debusine.server.lookups import (
    InvalidLookupError,
    LookupContext,
    LookupNoMatchError,
    ServerLookupResolver,
)
from debusine.tasks import LookupFailedError, LookupResult
from debusine.testing.playground import Playground

pytestmark = pytest.mark.django_db

ENVIRONMENTS = "debian:environments"


def tarball(playground: Playground, codename: str = "bookworm", **fields: Any) -> Artifact:
    return playground.create_artifact(
        category="debian:system-tarball",
        data={"codename": codename, "architecture": "amd64", "vendor": "debian"},
        **fields,
    )


def artifact_id(item: CollectionItem) -> int:
    assert item.artifact_id is not None
    return item.artifact_id


@pytest.fixture
def environments(playground: Playground) -> Collection:
    return Collection.objects.create(
        name="debian", category=ENVIRONMENTS, workspace=playground.workspace
    )


@pytest.fixture
def context(playground: Playground, user: User) -> LookupContext:
    return LookupContext(playground.workspace, user)


def test_string_lookups(
    playground: Playground, environments: Collection, context: LookupContext
) -> None:
    manager = CollectionManager.for_collection(environments)
    item = manager.add_artifact(tarball(playground))
    newer = manager.add_artifact(tarball(playground), variables={"variant": "sbuild"})

    assert context.lookup_single(
        "debian@debian:environments/match:codename=bookworm", expect_type="artifact"
    ) == LookupResult("a", collection_item=newer.pk, artifact=newer.artifact_id)
    assert context.lookup_single(
        "debian/match:codename=bookworm:variant=",
        expect_type="artifact",
        default_category=ENVIRONMENTS,
    ) == LookupResult("a", collection_item=item.pk, artifact=item.artifact_id)
    assert context.lookup_single(
        "debian@debian:environments/name:tarball:bookworm:amd64", expect_type="any"
    ).artifact == (item.artifact_id)
    assert context.lookup_single(
        "debian@debian:environments", expect_type="collection"
    ) == LookupResult("c", collection=environments.pk)


def test_id_lookups(
    playground: Playground, environments: Collection, context: LookupContext
) -> None:
    artifact = tarball(playground)

    assert context.lookup_single(artifact.pk, expect_type="artifact") == LookupResult(
        "a", artifact=artifact.pk
    )
    assert context.lookup_single(f"{artifact.pk}@artifacts", expect_type="any").artifact == (
        artifact.pk
    )
    assert context.lookup_single(environments.pk, expect_type="collection").collection == (
        environments.pk
    )
    assert context.lookup_single(
        f"{environments.pk}@collections", expect_type="collection"
    ).collection == (environments.pk)
    with pytest.raises(InvalidLookupError, match="expects an artifact or a collection"):
        context.lookup_single(artifact.pk, expect_type="any")


def test_lookup_errors(
    playground: Playground, environments: Collection, context: LookupContext
) -> None:
    tarball(playground)
    with pytest.raises(LookupNoMatchError, match="matched nothing"):
        context.lookup_single(
            "debian@debian:environments/match:codename=sid", expect_type="artifact"
        )
    with pytest.raises(LookupNoMatchError, match="does not exist"):
        context.lookup_single("ubuntu@debian:environments/match:codename=sid", expect_type="any")
    with pytest.raises(LookupNoMatchError, match="artifact 999999 does not exist"):
        context.lookup_single(999999, expect_type="artifact")
    with pytest.raises(InvalidLookupError, match="does not name a category"):
        context.lookup_single("debian/match:codename=sid", expect_type="artifact")
    with pytest.raises(InvalidLookupError, match="instead of expected 'artifact'"):
        context.lookup_single("debian@debian:environments", expect_type="artifact")
    with pytest.raises(InvalidLookupError, match="no 'source' lookup"):
        context.lookup_single("debian@debian:environments/source:hello", expect_type="artifact")
    with pytest.raises(InvalidLookupError, match="invalid expect_type"):
        context.lookup_single("debian@debian:environments", expect_type="everything")
    # Both are lookup failures for tasks.
    assert issubclass(LookupNoMatchError, LookupFailedError)
    assert issubclass(InvalidLookupError, LookupFailedError)


def test_private_workspaces_stay_hidden(playground: Playground, context: LookupContext) -> None:
    private = playground.create_workspace("private")
    hidden = tarball(playground, workspace=private)
    Collection.objects.create(name="secret", category=ENVIRONMENTS, workspace=private)

    with pytest.raises(LookupNoMatchError, match="does not exist or is hidden"):
        context.lookup_single(hidden.pk, expect_type="artifact")
    with pytest.raises(LookupNoMatchError):
        context.lookup_single("secret@debian:environments", expect_type="collection")


def test_collections_are_found_in_inherited_workspaces(playground: Playground, user: User) -> None:
    base = playground.create_workspace("base", public=True)
    shadowed = Collection.objects.create(name="debian", category=ENVIRONMENTS, workspace=base)
    only_in_base = Collection.objects.create(name="ubuntu", category=ENVIRONMENTS, workspace=base)
    child = playground.create_workspace("child")
    playground.grant(user, child)
    WorkspaceChain.objects.create(child=child, parent=base, order=0)
    own = Collection.objects.create(name="debian", category=ENVIRONMENTS, workspace=child)
    context = LookupContext(child, user)

    assert (
        context.lookup_single("debian@debian:environments", expect_type="collection").collection
        == own.pk
    )
    assert (
        context.lookup_single("ubuntu@debian:environments", expect_type="collection").collection
        == only_in_base.pk
    )
    assert shadowed.pk != own.pk


def test_dictionary_and_multiple_lookups(
    playground: Playground, environments: Collection, context: LookupContext
) -> None:
    manager = CollectionManager.for_collection(environments)
    bookworm = manager.add_artifact(tarball(playground))
    trixie = manager.add_artifact(tarball(playground, codename="trixie"))
    sbuild = manager.add_artifact(
        tarball(playground, codename="trixie"), variables={"variant": "sbuild"}
    )

    def ids(results: list[LookupResult]) -> list[int | None]:
        return [result.collection_item for result in results]

    everything = {"collection": "debian@debian:environments"}
    assert ids(context.lookup_multiple(everything, expect_type="artifact")) == [
        bookworm.pk,
        trixie.pk,
        sbuild.pk,
    ]
    assert ids(
        context.lookup_multiple(
            {**everything, "data__codename": "trixie", "name__endswith": ":sbuild:"},
            expect_type="artifact",
        )
    ) == [sbuild.pk]
    assert ids(
        context.lookup_multiple(
            {
                **everything,
                "data__codename__startswith": "book",
                "category": "debian:system-tarball",
            },
            expect_type="any",
        )
    ) == [bookworm.pk]
    assert ids(
        context.lookup_multiple({**everything, "lookup__variant": ""}, expect_type="artifact")
    ) == [bookworm.pk, trixie.pk]
    # A list is the union of its lookups, each result once.
    union = context.lookup_multiple(
        [
            "debian@debian:environments/match:codename=bookworm",
            {**everything, "data__codename": "bookworm"},
            artifact_id(trixie),
        ],
        expect_type="artifact",
    )
    assert ids(union) == [bookworm.pk, None]
    assert union[1] == LookupResult("a", artifact=trixie.artifact_id)
    # A dictionary where a single result is needed must match exactly one item.
    assert (
        context.lookup_single(
            {**everything, "name": "tarball:bookworm:amd64"}, expect_type="artifact"
        ).collection_item
        == bookworm.pk
    )
    with pytest.raises(InvalidLookupError, match="multiple matches"):
        context.lookup_single(everything, expect_type="artifact")
    with pytest.raises(LookupNoMatchError, match="matched nothing"):
        context.lookup_single({**everything, "data__codename": "sid"}, expect_type="artifact")
    with pytest.raises(InvalidLookupError, match="unknown key 'flavour'"):
        context.lookup_multiple({**everything, "flavour": "x"}, expect_type="artifact")
    with pytest.raises(InvalidLookupError, match="child_type 'collection'"):
        context.lookup_multiple({**everything, "child_type": "collection"}, expect_type="artifact")


def test_server_resolver_uses_the_work_request_workspace_and_creator(
    playground: Playground, environments: Collection, user: User
) -> None:
    private = playground.create_workspace("private")
    item = CollectionManager.for_collection(
        Collection.objects.create(name="debian", category=ENVIRONMENTS, workspace=private)
    ).add_artifact(tarball(playground, workspace=private))
    work_request = playground.create_work_request(created_by=user, workspace=private)

    resolver = ServerLookupResolver(work_request)

    # The work request's own workspace is visible even to a creator with no role in it.
    assert (
        resolver.lookup_single(
            "debian/match:codename=bookworm", expect_type="artifact", default_category=ENVIRONMENTS
        ).artifact
        == item.artifact_id
    )
    assert [
        r.artifact for r in resolver.lookup_multiple([artifact_id(item)], expect_type="artifact")
    ] == [item.artifact_id]
