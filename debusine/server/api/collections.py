"""
API views of collections for Debusine 0.16 clients (protocol-versions.md §3.6, §3.7):

- `/1.0/collection/{workspace}/`: list (pages, without workflow-internal collections), create;
- `/1.0/collection/{workspace}/{id}/`: read, change (`PATCH`), delete;
- `/1.0/collection/{workspace}/{category}/{name}/` (`?stats=1`): read by name;
- `…/{category}/{name}/item/` (`?name__startswith=`, `?category=`) and `…/item/{item}/`: the
  active items; an item may be removed (`DELETE`);
- `…/{category}/{name}/token/` and `…/token/{hash}/{role}/`: roles granted to external tokens;
- `/1.0/collection-relation/{workspace}/` and `…/{source}/{type}/`: relations between
  collections, replaced a whole target list at a time.

Reads need a user token and a workspace the user can see; changes need the configure
permission on the workspace (403 otherwise).

Optimistic concurrency: a collection (`GET` by id or name) and a relation list filtered on
both `source` and `type` carry an `ETag`; a `PATCH`/`DELETE` of the collection or a `PUT` of
the relation targets with an `If-Match` that no longer matches is refused with 412 and changes
nothing. `If-Match` is optional, as in Debusine (its 0.16 client sends it only when editing
relations), so no request is refused with 428.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pydantic
from django.db import IntegrityError, transaction
from django.db.models import BooleanField, Count, ExpressionWrapper, Q, QuerySet
from django.http import HttpResponse
from django.urls import URLPattern, path
from django.utils import timezone
from rest_framework import status
from rest_framework.request import Request
from rest_framework.views import APIView

from debusine.protocol.collections import (
    ORDERED_RELATION_TYPES,
    RELATION_TYPES,
    SINGLETON_CATEGORIES,
    CollectionCreateRequest,
    CollectionItemResponse,
    CollectionRef,
    CollectionRelationResponse,
    CollectionRelationSetRequest,
    CollectionRelationSetResponse,
    CollectionResponse,
    CollectionStats,
    CollectionUpdateRequest,
    TokenGrantRequest,
    TokenGrantResponse,
)
from debusine.server.api.auth import IsUser
from debusine.server.api.errors import ProblemError
from debusine.server.api.pages import check_if_match, entity_tag, json_response, paginated
from debusine.server.api.parsing import parse_body, validation_problem
from debusine.server.api.work_requests import WorkRequestListView, forbidden, request_user
from debusine.server.db.models import (
    Collection,
    CollectionItem,
    CollectionItemType,
    CollectionRelation,
    CollectionTokenGrant,
    ExternalToken,
    User,
    Workspace,
    generate_token_key,
    hash_token_key,
)

WORKFLOW_INTERNAL = "debusine:workflow-internal"
ITEM_TYPE_NAMES = {
    CollectionItemType.BARE: "bare",
    CollectionItemType.ARTIFACT: "artifact",
    CollectionItemType.COLLECTION: "collection",
}
EXTERNAL_USER = "external-user"

# --- Shared helpers ---------------------------------------------------------------------------


def workspace_of(request: Request, name: str) -> Workspace:
    """The visible workspace of the request's scope (404 problem if missing or hidden)."""
    return WorkRequestListView.workspace(request, name)


def check_may_configure(request: Request, workspace: Workspace) -> User:
    user = request_user(request)
    if not workspace.can_configure(user):
        raise forbidden(f"{user.username} cannot configure workspace {workspace.name}")
    return user


def days(period: timedelta | None) -> int | None:
    return None if period is None else period.days


def period(value: int | None) -> timedelta | None:
    return None if value is None else timedelta(days=value)


def collection_stats(collection: Collection) -> list[CollectionStats]:
    rows = (
        CollectionItem.objects.filter(parent_collection=collection)
        .annotate(active=ExpressionWrapper(Q(removed_at__isnull=True), BooleanField()))
        .values("child_type", "category", "active")
        .annotate(count=Count("id"))
        .order_by("child_type", "category", "-active")
    )
    return [
        CollectionStats(
            type=ITEM_TYPE_NAMES[CollectionItemType(row["child_type"])],  # type: ignore[arg-type]
            category=row["category"],
            active=row["active"],
            count=row["count"],
        )
        for row in rows
    ]


def collection_body(collection: Collection, *, stats: bool = False) -> CollectionResponse:
    workspace = collection.workspace
    base = f"/{workspace.scope.name}/{workspace.name}/collection/"
    links: dict[str, Any] = {
        "self": f"/api/1.0/collection/{workspace.name}/{collection.pk}/",
        "webui_self": f"{base}{collection.category}/{collection.name}/",
    }
    if collection.category != WORKFLOW_INTERNAL:
        links["webui_category"] = {"href": f"{base}{collection.category}/", "type": "category"}
    return CollectionResponse(
        id=collection.pk,
        name=collection.name,
        category=collection.category,
        full_history_retention_period=days(collection.full_history_retention_period),
        metadata_only_retention_period=days(collection.metadata_only_retention_period),
        data=collection.data,
        stats=collection_stats(collection) if stats else None,
        links=links,
    )


def collection_etag(collection: Collection) -> str:
    return entity_tag(collection_body(collection).model_dump(mode="json"))


def collection_response(
    collection: Collection, status_code: int = 200, *, stats: bool = False
) -> HttpResponse:
    return json_response(
        collection_body(collection, stats=stats), status_code, etag=collection_etag(collection)
    )


def find_collection(
    workspace: Workspace, *, collection_id: int | None = None, category: str = "", name: str = ""
) -> Collection:
    queryset = Collection.objects.select_related("workspace__scope").filter(workspace=workspace)
    if collection_id is not None:
        collection = queryset.filter(pk=collection_id).first()
        label = str(collection_id)
    else:
        collection = queryset.filter(category=category, name=name).first()
        label = f"{name}@{category}"
    if collection is None:
        raise ProblemError(
            f"Collection {label} not found",
            f"workspace {workspace.name} has no collection {label}",
            status_code=status.HTTP_404_NOT_FOUND,
        )
    return collection


def check_name(name: str, category: str) -> None:
    if category in SINGLETON_CATEGORIES and name != "_":
        raise ProblemError(
            "Cannot create collection",
            f"{category} is a singleton category: its collection must be named '_'",
            validation_errors={"name": ["singleton collections are named '_'"]},
        )
    if category not in SINGLETON_CATEGORIES and name.startswith("_"):
        raise ProblemError(
            "Cannot create collection",
            f"collection names starting with '_' are reserved: {name!r}",
            validation_errors={"name": ["names starting with '_' are reserved"]},
        )


def save_collection(collection: Collection, title: str) -> None:
    try:
        with transaction.atomic():
            collection.save()
    except IntegrityError:
        raise ProblemError(
            title,
            f"workspace {collection.workspace.name} already has a collection "
            f"{collection.name}@{collection.category}",
            validation_errors={"name": ["a collection of this name and category exists"]},
        ) from None


# --- Collections ------------------------------------------------------------------------------


class CollectionListView(APIView):
    """`GET`: the workspace's collections (pages). `POST`: create one (201)."""

    permission_classes = [IsUser]

    def get(self, request: Request, workspace: str) -> HttpResponse:
        space = workspace_of(request, workspace)
        rows = (
            Collection.objects.select_related("workspace__scope")
            .filter(workspace=space)
            .exclude(category=WORKFLOW_INTERNAL)
            .order_by("category", "name")
        )
        return paginated(request, rows, collection_body)

    def post(self, request: Request, workspace: str) -> HttpResponse:
        space = workspace_of(request, workspace)
        body = parse_body(request, CollectionCreateRequest, "Cannot create collection")
        check_may_configure(request, space)
        check_name(body.name, body.category)
        collection = Collection(
            name=body.name,
            category=body.category,
            workspace=space,
            full_history_retention_period=period(body.full_history_retention_period),
            metadata_only_retention_period=period(body.metadata_only_retention_period),
            data=body.data,
        )
        save_collection(collection, "Cannot create collection")
        return collection_response(collection, status.HTTP_201_CREATED)


class CollectionDetailView(APIView):
    """`GET`, `PATCH`, `DELETE` one collection by id."""

    permission_classes = [IsUser]

    def get(self, request: Request, workspace: str, collection_id: int) -> HttpResponse:
        collection = find_collection(workspace_of(request, workspace), collection_id=collection_id)
        return collection_response(collection, stats=bool(request.query_params.get("stats")))

    def patch(self, request: Request, workspace: str, collection_id: int) -> HttpResponse:
        space = workspace_of(request, workspace)
        collection = find_collection(space, collection_id=collection_id)
        if not isinstance(request.data, dict):
            raise ProblemError("Cannot update collection", "The body must be a JSON object.")
        try:
            body = CollectionUpdateRequest.model_validate(request.data)
        except pydantic.ValidationError as error:
            raise validation_problem("Cannot update collection", error) from None
        check_may_configure(request, space)
        check_if_match(request, collection_etag(collection), "Collection")
        if body.category is not None and body.category != collection.category:
            raise ProblemError(
                "Cannot update collection",
                f"the category of a collection cannot change ({collection.category})",
                validation_errors={"category": ["the category cannot change"]},
            )
        if body.name is not None and body.name != collection.name:
            check_name(body.name, collection.category)
            collection.name = body.name
        fields = request.data
        if "full_history_retention_period" in fields:
            collection.full_history_retention_period = period(body.full_history_retention_period)
        if "metadata_only_retention_period" in fields:
            collection.metadata_only_retention_period = period(body.metadata_only_retention_period)
        if body.data is not None:
            collection.data = body.data
        save_collection(collection, "Cannot update collection")
        return collection_response(collection)

    def delete(self, request: Request, workspace: str, collection_id: int) -> HttpResponse:
        space = workspace_of(request, workspace)
        collection = find_collection(space, collection_id=collection_id)
        check_may_configure(request, space)
        check_if_match(request, collection_etag(collection), "Collection")
        if collection.category == WORKFLOW_INTERNAL:
            raise ProblemError(
                "Cannot delete collection",
                "workflow-internal collections go with their workflow",
            )
        if CollectionItem.objects.filter(collection=collection).exists():
            raise ProblemError(
                "Cannot delete collection",
                f"{collection} is an item of another collection",
            )
        # The items are history of this collection only (the CLI asks before deleting a
        # collection that is not empty).
        CollectionItem.objects.filter(parent_collection=collection).delete()
        collection.delete()
        return HttpResponse(status=status.HTTP_204_NO_CONTENT)


class CollectionByNameView(APIView):
    """`GET` one collection by category and name (`?stats=1` adds its item counts)."""

    permission_classes = [IsUser]

    def get(self, request: Request, workspace: str, category: str, name: str) -> HttpResponse:
        collection = find_collection(
            workspace_of(request, workspace), category=category, name=name
        )
        return collection_response(collection, stats=bool(request.query_params.get("stats")))


# --- Items ------------------------------------------------------------------------------------


def item_body(item: CollectionItem) -> CollectionItemResponse:
    return CollectionItemResponse(name=item.name, category=item.category, data=item.data or {})


class CollectionItemListView(APIView):
    """`GET`: the active items, by name (`?name__startswith=`, `?category=`)."""

    permission_classes = [IsUser]

    def get(self, request: Request, workspace: str, category: str, name: str) -> HttpResponse:
        collection = find_collection(
            workspace_of(request, workspace), category=category, name=name
        )
        rows = CollectionItem.objects.filter(
            parent_collection=collection, removed_at__isnull=True
        ).order_by("name")
        if prefix := request.query_params.get("name__startswith"):
            rows = rows.filter(name__startswith=prefix)
        if item_category := request.query_params.get("category"):
            rows = rows.filter(category=item_category)
        return paginated(request, rows, item_body)


class CollectionItemDetailView(APIView):
    """`GET` one active item; `DELETE` removes it (it stays as history)."""

    permission_classes = [IsUser]

    @staticmethod
    def item(collection: Collection, item_name: str) -> CollectionItem:
        item = CollectionItem.objects.filter(
            parent_collection=collection, name=item_name, removed_at__isnull=True
        ).first()
        if item is None:
            raise ProblemError(
                f"Collection item {item_name} not found",
                f"{collection} has no active item {item_name!r}",
                status_code=status.HTTP_404_NOT_FOUND,
            )
        return item

    def get(
        self, request: Request, workspace: str, category: str, name: str, item_name: str
    ) -> HttpResponse:
        collection = find_collection(
            workspace_of(request, workspace), category=category, name=name
        )
        return json_response(item_body(self.item(collection, item_name)))

    def delete(
        self, request: Request, workspace: str, category: str, name: str, item_name: str
    ) -> HttpResponse:
        space = workspace_of(request, workspace)
        collection = find_collection(space, category=category, name=name)
        user = check_may_configure(request, space)
        if collection.category == WORKFLOW_INTERNAL:
            raise ProblemError(
                "Cannot remove collection item",
                "items of workflow-internal collections belong to their workflow",
            )
        item = self.item(collection, item_name)
        item.removed_at = timezone.now()
        item.removed_by_user = user
        item.save(update_fields=["removed_at", "removed_by_user"])
        return HttpResponse(status=status.HTTP_204_NO_CONTENT)


# --- Token grants -----------------------------------------------------------------------------


def grant_body(grant: CollectionTokenGrant, key: str | None = None) -> TokenGrantResponse:
    return TokenGrantResponse(
        token_type=EXTERNAL_USER,
        token_hash=grant.token.hash,
        token_key=key,
        username=grant.token.username,
        comment=grant.comment,
        role=grant.role,
    )


class TokenGrantListView(APIView):
    """`GET`: the roles granted on the collection (pages). `POST`: grant one (201)."""

    permission_classes = [IsUser]

    def get(self, request: Request, workspace: str, category: str, name: str) -> HttpResponse:
        space = workspace_of(request, workspace)
        collection = find_collection(space, category=category, name=name)
        check_may_configure(request, space)
        rows = (
            CollectionTokenGrant.objects.filter(collection=collection)
            .select_related("token")
            .order_by("token__username", "token__hash", "role")
        )
        return paginated(request, rows, grant_body)

    def post(self, request: Request, workspace: str, category: str, name: str) -> HttpResponse:
        space = workspace_of(request, workspace)
        collection = find_collection(space, category=category, name=name)
        body = parse_body(request, TokenGrantRequest, "Cannot grant role")
        check_may_configure(request, space)
        key: str | None = None
        if body.token_hash:
            token = ExternalToken.objects.filter(hash=body.token_hash).first()
            if token is None:
                raise ProblemError(
                    "Cannot grant role",
                    f"no external-user token {body.token_hash!r}",
                    validation_errors={"token_hash": ["no such external-user token"]},
                )
            if body.username and token.username != body.username:
                raise ProblemError(
                    "Cannot grant role",
                    f"token {body.token_hash} does not belong to {body.username}",
                    validation_errors={"username": ["not the token's owner"]},
                )
        elif body.username:
            key = generate_token_key()
            token = ExternalToken.objects.create(
                hash=hash_token_key(key), username=body.username, comment=body.comment
            )
        else:
            raise ProblemError(
                "Cannot grant role",
                "Give token_hash (an existing external-user token) or username (a new one)",
                validation_errors={"token_hash": ["token_hash or username is required"]},
            )
        grant, _ = CollectionTokenGrant.objects.get_or_create(
            collection=collection, token=token, role=body.role, defaults={"comment": body.comment}
        )
        return json_response(grant_body(grant, key), status.HTTP_201_CREATED)


class TokenGrantDetailView(APIView):
    """`DELETE`: revoke one role from one token."""

    permission_classes = [IsUser]

    def delete(
        self,
        request: Request,
        workspace: str,
        category: str,
        name: str,
        token_hash: str,
        role: str,
    ) -> HttpResponse:
        space = workspace_of(request, workspace)
        collection = find_collection(space, category=category, name=name)
        check_may_configure(request, space)
        deleted, _ = CollectionTokenGrant.objects.filter(
            collection=collection, token__hash=token_hash, role=role
        ).delete()
        if not deleted:
            raise ProblemError(
                "Token grant not found",
                f"token {token_hash} has no role {role!r} on {collection}",
                status_code=status.HTTP_404_NOT_FOUND,
            )
        return HttpResponse(status=status.HTTP_204_NO_CONTENT)


# --- Relations --------------------------------------------------------------------------------


def parse_collection_ref(text: str, parameter: str) -> tuple[str, str]:
    """`name@category` -> (name, category), or a 400 problem."""
    name, separator, category = text.rpartition("@")
    if not separator or not name or not category or "/" in text:
        raise ProblemError(
            "Invalid collection identifier",
            f"{parameter}={text!r} is not of the form name@category",
            validation_errors={parameter: ["expected name@category"]},
        )
    return name, category


def check_relation_type(value: str) -> None:
    if value not in RELATION_TYPES:
        raise ProblemError(
            "Invalid relation type",
            f"{value!r} is not one of {', '.join(RELATION_TYPES)}",
            validation_errors={"type": [f"unknown relation type {value!r}"]},
        )


def relation_body(relation: CollectionRelation) -> CollectionRelationResponse:
    return CollectionRelationResponse(
        source_collection=CollectionRef(
            name=relation.source.name, category=relation.source.category
        ),
        target_collection=CollectionRef(
            name=relation.target.name, category=relation.target.category
        ),
        type=relation.type,
        position=relation.position,
    )


def relation_rows(workspace: Workspace) -> QuerySet[CollectionRelation]:
    return (
        CollectionRelation.objects.filter(source__workspace=workspace)
        .select_related("source", "target")
        .order_by(
            "source__category",
            "source__name",
            "type",
            "position",
            "target__category",
            "target__name",
        )
    )


def targets_etag(source: Collection, relation_type: str) -> str:
    """The entity tag of the ordered target list of `source` for `relation_type`."""
    targets = relation_rows(source.workspace).filter(source=source, type=relation_type)
    return entity_tag([[row.target_id, row.position] for row in targets])


class CollectionRelationListView(APIView):
    """
    `GET`: relations whose source is in the workspace (`?source=`, `?target=` as name@category,
    `?type=`). With both `source` and `type`, one page of everything and an `ETag` for `PUT`.
    """

    permission_classes = [IsUser]

    def get(self, request: Request, workspace: str) -> HttpResponse:
        space = workspace_of(request, workspace)
        params = request.query_params
        rows = relation_rows(space)
        source: Collection | None = None
        if source_text := params.get("source"):
            name, category = parse_collection_ref(source_text, "source")
            source = find_collection(space, category=category, name=name)
            rows = rows.filter(source=source)
        if target_text := params.get("target"):
            name, category = parse_collection_ref(target_text, "target")
            rows = rows.filter(target=find_collection(space, category=category, name=name))
        relation_type = params.get("type")
        if relation_type:
            check_relation_type(relation_type)
            rows = rows.filter(type=relation_type)
        if source is not None and relation_type:
            results = [relation_body(row).model_dump(mode="json") for row in rows]
            return json_response(
                {"count": len(results), "next": None, "previous": None, "results": results},
                etag=targets_etag(source, relation_type),
            )
        return paginated(request, rows, relation_body)


class CollectionRelationSetView(APIView):
    """`PUT`: replace the ordered targets of `source` for `type` (`If-Match` optional)."""

    permission_classes = [IsUser]

    def put(
        self, request: Request, workspace: str, source: str, relation_type: str
    ) -> HttpResponse:
        space = workspace_of(request, workspace)
        check_relation_type(relation_type)
        name, category = parse_collection_ref(source, "source")
        body = parse_body(request, CollectionRelationSetRequest, "Cannot set collection relations")
        check_may_configure(request, space)
        with transaction.atomic():
            source_collection = (
                Collection.objects.select_for_update()
                .select_related("workspace__scope")
                .filter(workspace=space, category=category, name=name)
                .first()
            )
            if source_collection is None:
                raise ProblemError(
                    f"Collection {source} not found",
                    f"workspace {space.name} has no collection {source}",
                    status_code=status.HTTP_404_NOT_FOUND,
                )
            check_if_match(
                request, targets_etag(source_collection, relation_type), "Collection relations"
            )
            targets: list[Collection] = []
            for index, ref in enumerate(body.targets):
                target = Collection.objects.filter(
                    workspace=space, name=ref.name, category=ref.category
                ).first()
                if target is None:
                    raise ProblemError(
                        "Cannot set collection relations",
                        f"workspace {space.name} has no collection {ref.name}@{ref.category}",
                        validation_errors={f"targets.{index}": ["no such collection"]},
                    )
                if target.pk in {chosen.pk for chosen in targets}:
                    raise ProblemError(
                        "Cannot set collection relations",
                        f"{ref.name}@{ref.category} is listed twice",
                        validation_errors={f"targets.{index}": ["listed twice"]},
                    )
                targets.append(target)
            CollectionRelation.objects.filter(
                source=source_collection, type=relation_type
            ).delete()
            ordered = relation_type in ORDERED_RELATION_TYPES
            CollectionRelation.objects.bulk_create(
                CollectionRelation(
                    source=source_collection,
                    target=target,
                    type=relation_type,
                    position=index + 1 if ordered else None,
                )
                for index, target in enumerate(targets)
            )
            etag = targets_etag(source_collection, relation_type)
        return json_response(
            CollectionRelationSetResponse(
                targets=[CollectionRef(name=t.name, category=t.category) for t in targets]
            ),
            etag=etag,
        )


COLLECTION = "collection/<str:workspace>/<str:category>/<str:name>/"

urlpatterns: list[URLPattern] = [
    path("collection/<str:workspace>/", CollectionListView.as_view(), name="api-collections"),
    path(
        "collection/<str:workspace>/<int:collection_id>/",
        CollectionDetailView.as_view(),
        name="api-collection",
    ),
    path(COLLECTION, CollectionByNameView.as_view(), name="api-collection-by-name"),
    path(f"{COLLECTION}item/", CollectionItemListView.as_view(), name="api-collection-items"),
    path(
        f"{COLLECTION}item/<str:item_name>/",
        CollectionItemDetailView.as_view(),
        name="api-collection-item",
    ),
    path(f"{COLLECTION}token/", TokenGrantListView.as_view(), name="api-collection-tokens"),
    path(
        f"{COLLECTION}token/<str:token_hash>/<str:role>/",
        TokenGrantDetailView.as_view(),
        name="api-collection-token",
    ),
    path(
        "collection-relation/<str:workspace>/",
        CollectionRelationListView.as_view(),
        name="api-collection-relations",
    ),
    path(
        "collection-relation/<str:workspace>/<str:source>/<str:relation_type>/",
        CollectionRelationSetView.as_view(),
        name="api-collection-relation-set",
    ),
]
