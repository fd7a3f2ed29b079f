"""
Wire models of the collection endpoints Debusine 0.16 clients call (protocol-versions.md §3.6,
§3.7): collections, their items, token grants, and relations between collections.

All of them live under `/1.0/collection/{workspace}/…` and `/1.0/collection-relation/{workspace}/`
and list in pages of `{count, next, previous, results}`. Request models forbid unknown keys,
except the update body, which ignores the keys of the object as it was read (`id`, `links`,
`stats`): the 0.16 client sends back the whole object it fetched.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from debusine.protocol.wire import StrictRequest

#: Categories a collection may be created with over the API.
COLLECTION_CATEGORIES = (
    "debian:environments",
    "debian:suite",
    "debian:package-build-logs",
    "debusine:workflow-internal",
    "debusine:task-configuration",
    "debusine:task-history",
    "debian:archive",
    "debian:qa-results",
)
#: Categories of which a workspace holds at most one, named `_`.
SINGLETON_CATEGORIES = frozenset(
    {"debian:package-build-logs", "debusine:task-history", "debian:archive"}
)
#: Types of relations between collections; `suite-requires` targets are ordered.
RELATION_TYPES = (
    "suite-forked-from",
    "suite-based-on",
    "suite-requires",
    "suite-targeting",
    "suite-default-qa-results",
)
ORDERED_RELATION_TYPES = frozenset({"suite-requires"})
#: Roles a token may be granted on a collection.
TOKEN_ROLES = ("viewer",)

CollectionName = StrictStr
RetentionDays = StrictInt | None


class CollectionCreateRequest(StrictRequest):
    """Body of `POST /1.0/collection/{workspace}/`."""

    name: CollectionName = Field(min_length=1, max_length=255)
    category: Literal[COLLECTION_CATEGORIES]  # type: ignore[valid-type]
    full_history_retention_period: RetentionDays = Field(default=None, ge=0)
    metadata_only_retention_period: RetentionDays = Field(default=None, ge=0)
    data: dict[str, Any] = {}


class CollectionUpdateRequest(BaseModel):
    """
    Body of `PATCH /1.0/collection/{workspace}/{id}/`: the fields to change. `category` may be
    sent (0.16 sends the whole object) but not changed; `id`, `links` and `stats` are ignored.
    """

    model_config = ConfigDict(extra="ignore")

    name: CollectionName | None = Field(default=None, min_length=1, max_length=255)
    category: StrictStr | None = None
    full_history_retention_period: RetentionDays = Field(default=None, ge=0)
    metadata_only_retention_period: RetentionDays = Field(default=None, ge=0)
    data: dict[str, Any] | None = None


class CollectionStats(BaseModel):
    """How many items of one kind a collection holds (`?stats=1`)."""

    type: Literal["bare", "artifact", "collection"]
    category: str
    active: bool
    count: int


class CollectionResponse(BaseModel):
    """A collection as our server sends it (Debusine 0.16's CollectionData)."""

    id: int
    name: str
    category: str
    full_history_retention_period: int | None
    metadata_only_retention_period: int | None
    data: dict[str, Any]
    stats: list[CollectionStats] | None
    links: dict[str, Any]


class CollectionItemResponse(BaseModel):
    """An active item of a collection."""

    name: str
    category: str
    data: dict[str, Any]


class TokenGrantRequest(StrictRequest):
    """
    Body of `POST /1.0/collection/{workspace}/{category}/{name}/token/`: grant `role` to an
    existing external-user token (`token_hash`), or to a new one made for `username`.
    """

    comment: StrictStr = Field(default="", max_length=100)
    role: Literal[TOKEN_ROLES]  # type: ignore[valid-type]
    token_hash: StrictStr | None = None
    #: An external user name (not necessarily an account of this server).
    username: StrictStr | None = Field(default=None, min_length=1, max_length=255)
    #: 0.16 models the request as a server object; its (empty) links are ignored.
    links: dict[str, Any] = {}


class TokenGrantResponse(BaseModel):
    """A role granted to a token on a collection; `token_key` only when the token is new."""

    token_type: str
    token_hash: str
    token_key: str | None
    username: str | None
    comment: str
    role: str


class CollectionRef(BaseModel):
    """A collection named by name and category (`name@category` in paths)."""

    model_config = ConfigDict(extra="forbid")

    name: StrictStr
    category: StrictStr


class CollectionRelationResponse(BaseModel):
    """One relation: `source` stands in relation `type` to `target`."""

    source_collection: CollectionRef
    target_collection: CollectionRef
    type: str
    position: int | None


class CollectionRelationSetRequest(StrictRequest):
    """Body of `PUT /1.0/collection-relation/{workspace}/{source}/{type}/`: the new targets."""

    targets: list[CollectionRef]


class CollectionRelationSetResponse(BaseModel):
    """The targets as stored, in order."""

    targets: list[CollectionRef]
