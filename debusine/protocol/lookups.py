"""
Wire models of the lookup endpoints (`POST /1.0/lookup/single/` and `/lookup/multiple/`,
protocol.md §2.4): a worker resolves a lookup for the work request it runs.
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
