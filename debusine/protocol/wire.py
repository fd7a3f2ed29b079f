"""Wire formats shared by the server, the worker and the client."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict

Item = TypeVar("Item")


class StrictRequest(BaseModel):
    """Base of request bodies: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


#: Configuration of the lenient response models our client and worker parse answers with:
#: unknown keys are dropped, so newer servers may add fields (as Debusine's own client does).
LENIENT = ConfigDict(extra="ignore")


def iso_datetime(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a `Z` suffix, as Debusine servers write datetimes (None stays)."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class NumberedPage(BaseModel, Generic[Item]):
    """
    One page of the lists Debusine 0.16 added (`?page=N`): the total `count`, absolute
    `next`/`previous` URLs (None at either end) and the `results`.
    """

    count: int
    next: str | None
    previous: str | None
    results: list[Item]
