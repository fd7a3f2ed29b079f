"""The shared wire formats: datetimes as Debusine servers write them, strict requests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from debusine.protocol.wire import StrictRequest, iso_datetime


def test_utc_datetimes_get_a_z_suffix() -> None:
    assert iso_datetime(datetime(2025, 3, 1, 10, 0, tzinfo=UTC)) == "2025-03-01T10:00:00Z"


def test_other_zones_are_converted_to_utc() -> None:
    paris = timezone(timedelta(hours=1))

    text = iso_datetime(datetime(2025, 3, 1, 11, 0, 0, 250000, tzinfo=paris))

    assert text == "2025-03-01T10:00:00.250000Z"
    assert text is not None
    assert datetime.fromisoformat(text) == datetime(2025, 3, 1, 10, 0, 0, 250000, tzinfo=UTC)


def test_no_datetime_stays_none() -> None:
    assert iso_datetime(None) is None


class Ping(StrictRequest):
    count: int


def test_strict_requests_refuse_unknown_keys() -> None:
    with pytest.raises(ValidationError, match="extra"):
        Ping.model_validate({"count": 1, "extra": True})
