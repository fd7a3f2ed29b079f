"""Cron periods of a pool's limits, at fixed instants, across daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from debusine.server.db.worker_pool_schedules import CronError, CronExpression, period_started_at
from debusine.server.db.worker_pool_specs import SpecificationError, parse_limits

PARIS = "Europe/Paris"


def utc(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def office_hours(**changes: Any) -> dict[str, Any]:
    return {
        "max_active_instances": 10,
        "min_active_instances": 0,
        "idle_count": 0,
        "schedules": [
            {
                "cron": "0 8 * * 1-5",
                "timezone": PARIS,
                "duration_seconds": 10 * 3600,
                "min_active_instances": 2,
                "idle_count": 3,
                **changes,
            }
        ],
    }


def test_office_hours_follow_paris_time_on_both_sides_of_the_spring_change() -> None:
    limits = parse_limits(office_hours())
    # Friday 27 March 2026, winter time: 08:00 in Paris is 07:00 UTC.
    assert limits.effective_at(utc(2026, 3, 27, 6, 59)).schedule is None
    friday = limits.effective_at(utc(2026, 3, 27, 7, 0))
    assert (friday.min_active_instances, friday.idle_count) == (2, 3)
    assert friday.schedule == (
        "schedules[0] ('0 8 * * 1-5' Europe/Paris) since 2026-03-27T07:00:00+00:00"
    )
    assert limits.effective_at(utc(2026, 3, 27, 16, 59)).idle_count == 3
    assert limits.effective_at(utc(2026, 3, 27, 17, 0)).idle_count == 0  # ten hours later
    # The weekend (the clocks change on Sunday night): the pool's own limits.
    assert limits.effective_at(utc(2026, 3, 28, 9, 0)).schedule is None
    # Monday 30 March, summer time: 08:00 in Paris is 06:00 UTC.
    assert limits.effective_at(utc(2026, 3, 30, 5, 59)).schedule is None
    assert limits.effective_at(utc(2026, 3, 30, 6, 0)).idle_count == 3
    assert limits.effective_at(utc(2026, 3, 30, 15, 59)).idle_count == 3
    assert limits.effective_at(utc(2026, 3, 30, 16, 0)).idle_count == 0


def test_office_hours_after_the_autumn_change() -> None:
    limits = parse_limits(office_hours())
    # Friday 23 October 2026 (summer time) and Monday 26 October (winter time).
    assert limits.effective_at(utc(2026, 10, 23, 6, 0)).idle_count == 3
    assert limits.effective_at(utc(2026, 10, 26, 6, 30)).schedule is None
    assert limits.effective_at(utc(2026, 10, 26, 7, 0)).idle_count == 3


def test_a_time_the_spring_change_skips_starts_as_if_clocks_had_not_moved() -> None:
    # 29 March 2026: Paris goes from 02:00 to 03:00 (01:00 UTC); 02:30 never happens.
    started = period_started_at("30 2 * * *", PARIS, 600, utc(2026, 3, 29, 1, 35))
    assert started == utc(2026, 3, 29, 1, 30)  # 03:30 summer time
    assert period_started_at("30 2 * * *", PARIS, 600, utc(2026, 3, 29, 1, 29)) is None


def test_a_time_the_autumn_change_repeats_starts_once() -> None:
    # 25 October 2026: Paris goes from 03:00 back to 02:00 (01:00 UTC); 02:30 happens twice,
    # at 00:30 and 01:30 UTC. Only the first starts a period.
    assert period_started_at("30 2 * * *", PARIS, 1800, utc(2026, 10, 25, 0, 45)) == utc(
        2026, 10, 25, 0, 30
    )
    assert period_started_at("30 2 * * *", PARIS, 1800, utc(2026, 10, 25, 1, 45)) is None


def test_cron_fields() -> None:
    expression = CronExpression.parse("*/15 9-17/4 * 1,6-7 0")
    assert expression.minutes == {0, 15, 30, 45}
    assert expression.hours == {9, 13, 17}
    assert expression.months == {1, 6, 7}
    assert expression.weekdays == {0}
    assert CronExpression.parse("0 0 * * 7").weekdays == {0}  # 7 is Sunday too
    # Both day fields restricted: either matches (the 1st of the month, or any Monday).
    either = CronExpression.parse("0 0 1 * 1")
    assert either.matches_day(datetime(2026, 4, 1).date())  # a Wednesday
    assert either.matches_day(datetime(2026, 4, 6).date())  # a Monday
    assert not either.matches_day(datetime(2026, 4, 7).date())


def test_the_last_period_listed_wins_and_unset_fields_keep_the_pools() -> None:
    limits = parse_limits(
        {
            "max_active_instances": 5,
            "min_active_instances": 1,
            "idle_count": 1,
            "schedules": [
                {"cron": "0 * * * *", "duration_seconds": 3600, "idle_count": 4},
                {"cron": "0 12 * * *", "duration_seconds": 3600, "min_active_instances": 3},
            ],
        }
    )
    morning = limits.effective_at(utc(2026, 6, 1, 9, 30))
    assert (morning.min_active_instances, morning.idle_count) == (1, 4)
    noon = limits.effective_at(utc(2026, 6, 1, 12, 30))
    assert (noon.min_active_instances, noon.idle_count) == (3, 1)
    assert noon.schedule is not None and noon.schedule.startswith("schedules[1]")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"cron": "61 8 * * 1-5"}, "schedules.0.cron: Value error, minute field: 61 is out of"),
        ({"cron": "0 8 * *"}, "schedules.0.cron: Value error, '0 8 * *' has 4 field(s)"),
        ({"cron": "0 8 * * 5-1"}, "schedules.0.cron: Value error, day of week field: range"),
        ({"cron": "0 8 * * mon"}, "schedules.0.cron: Value error, day of week field: 'mon'"),
        ({"timezone": "Europe/Pariss"}, "schedules.0.timezone: Value error, unknown time zone"),
        ({"duration_seconds": 0}, "schedules.0.duration_seconds: Input should be greater"),
        (
            {"min_active_instances": 11},
            "(top level): Value error, schedules.0.min_active_instances",
        ),
        (
            {"min_active_instances": None, "idle_count": None},
            "schedules.0: Value error, a schedule sets min_active_instances, idle_count",
        ),
        ({"idle": 1}, "schedules.0.idle: Extra inputs are not permitted"),
    ],
)
def test_bad_schedules_are_refused_with_the_field_and_the_reason(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpecificationError) as error:
        parse_limits(office_hours(**changes))
    assert str(error.value).startswith(f"limits: {message}"), str(error.value)


def test_cron_errors_are_value_errors() -> None:
    with pytest.raises(CronError, match="hour field: 24 is out of range 0-23"):
        CronExpression.parse("0 24 * * *")
