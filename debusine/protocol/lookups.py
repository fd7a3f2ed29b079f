"""
Wire models of the lookup endpoints (`POST /1.0/lookup/single/` and `/lookup/multiple/`) in
their two mutually exclusive shapes: a worker resolving a lookup for the work request it runs
(protocol.md §2.4, Debusine 0.11/0.12), and a user resolving one in a workspace (Debusine
0.16, protocol-versions.md §3.8). The body tells them apart: only 0.16 sends `workspace`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, StrictInt, StrictStr

from debusine.protocol.wire import StrictRequest

ExpectType = Literal["bare", "artifact", "artifact-or-promise", "collection", "any"]

#: One lookup: an ID, a lookup string or a dictionary lookup.
SingleLookup = StrictInt | StrictStr | dict[str, Any]


class LookupSingleRequest(StrictRequest):
    """Body of `POST /1.0/lookup/single/`."""

    lookup: SingleLookup
    work_request: StrictInt
    expect_type: ExpectType
    default_category: StrictStr | None = None


class LookupMultipleRequest(StrictRequest):
    """Body of `POST /1.0/lookup/multiple/`: a list lookup, or one dictionary lookup."""

    lookup: list[SingleLookup] | dict[str, Any]
    work_request: StrictInt
    expect_type: ExpectType
    default_category: StrictStr | None = None


class LookupResponse(BaseModel):
    """One match: what it is ("b" bare, "a" artifact, "c" collection) and its IDs."""

    result_type: Literal["b", "a", "c"]
    collection_item: int | None
    artifact: int | None
    collection: int | None


# --- Debusine 0.16: lookups by users in a workspace (protocol-versions.md §3.8) --------------

#: 0.16 servers also accept the one-letter types of older callers.
V016ExpectType = ExpectType | Literal["b", "a", "c"]


class V016LookupSingleRequest(StrictRequest):
    """Body of `POST /1.0/lookup/single/` from a 0.16 client: a user's lookup in `workspace`."""

    lookup: SingleLookup
    workspace: StrictStr
    expect_type: V016ExpectType = "any"
    default_category: StrictStr | None = None
    #: Sent by `collection lookup-* --workflow`; Debusine's server ignores it, as we do.
    work_request: StrictInt | None = None


class V016LookupMultipleRequest(StrictRequest):
    """Body of `POST /1.0/lookup/multiple/` from a 0.16 client."""

    lookup: list[SingleLookup] | dict[str, Any]
    workspace: StrictStr
    expect_type: V016ExpectType = "any"
    default_category: StrictStr | None = None
    work_request: StrictInt | None = None


class CollectionItemInfo(BaseModel):
    name: str
    category: str
    data: dict[str, Any]


class CollectionInfo(BaseModel):
    name: str
    category: str


class V016LookupResponse(BaseModel):
    """One match as 0.16 reads it: full-word types, the item itself, links."""

    result_type: Literal["bare", "artifact", "collection"]
    collection_item: CollectionItemInfo | None
    artifact: int | None
    collection: int | None
    collection_info: CollectionInfo | None
    parent_collection_lookup: str | None
    links: dict[str, str]
