"""
Cron periods of a pool's limits: when a period is on, it changes the pool's minimum and spare
(`idle_count`) instances.

A period starts at each time its five-field cron expression (minute, hour, day of month,
month, day of week; `*`, `a-b`, `a,b`, `*/n`, `a-b/n`; day of week 0-7, 0 and 7 are Sunday)
names in its time zone, and lasts `duration_seconds`. When both day fields are restricted, a
day matches either (as cron does). Wall-clock times are read in the period's time zone: a time
that a daylight-saving change skips counts as if the clocks had not moved yet (02:30 on the
spring-forward night in Europe/Paris starts at 03:30 summer time), and a time it repeats
counts once, at its first occurrence. No Django here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

#: (name, lowest, highest) of the five fields, in order.
FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)


class CronError(ValueError):
    """A cron expression or time zone that cannot be used; the message says why."""


def _number(text: str, name: str, low: int, high: int) -> int:
    if not text.isdigit():
        raise CronError(f"{name} field: {text!r} is not a number")
    value = int(text)
    if not low <= value <= high:
        raise CronError(f"{name} field: {value} is out of range {low}-{high}")
    return value


def _parse_field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronError(f"{name} field: empty item in {text!r}")
        span, slash, step_text = part.partition("/")
        step = _number(step_text, name, 1, high - low + 1) if slash else 1
        if span == "*":
            first, last = low, high
        elif "-" in span:
            start_text, _, end_text = span.partition("-")
            first = _number(start_text, name, low, high)
            last = _number(end_text, name, low, high)
            if first > last:
                raise CronError(f"{name} field: range {span!r} goes backwards")
        else:
            first = _number(span, name, low, high)
            last = high if slash else first
        values.update(range(first, last + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class CronExpression:
    """A parsed five-field cron expression."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday ... 6 = Saturday
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, text: str) -> CronExpression:
        parts = text.split()
        if len(parts) != 5:
            raise CronError(
                f"{text!r} has {len(parts)} field(s); a cron expression has five: "
                "minute hour day-of-month month day-of-week"
            )
        minutes, hours, days, months, weekdays = (
            _parse_field(part, name, low, high)
            for part, (name, low, high) in zip(parts, FIELDS, strict=True)
        )
        return cls(
            minutes=minutes,
            hours=hours,
            days=days,
            months=months,
            weekdays=frozenset(day % 7 for day in weekdays),
            any_day=parts[2] == "*",
            any_weekday=parts[4] == "*",
        )

    def matches_day(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        in_month = day.day in self.days
        in_week = (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return in_month and in_week
        return in_month or in_week

    def starts_between(
        self, zone: ZoneInfo, earliest: datetime, latest: datetime
    ) -> list[datetime]:
        """Every start in (`earliest`, `latest`] (aware datetimes), in UTC, oldest first."""
        starts = []
        day = earliest.astimezone(zone).date() - timedelta(days=1)
        last_day = latest.astimezone(zone).date() + timedelta(days=1)
        while day <= last_day:
            if self.matches_day(day):
                for hour in sorted(self.hours):
                    for minute in sorted(self.minutes):
                        local = datetime.combine(day, time(hour, minute), tzinfo=zone)
                        at = local.astimezone(UTC)
                        if earliest < at <= latest:
                            starts.append(at)
            day += timedelta(days=1)
        return sorted(set(starts))


def parse_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(f"unknown time zone {name!r}") from None


def period_started_at(
    cron: str, zone_name: str, duration_seconds: int, now: datetime
) -> datetime | None:
    """When the period that is on at `now` started, or None when none is on."""
    expression = CronExpression.parse(cron)
    earliest = now - timedelta(seconds=duration_seconds)
    starts = expression.starts_between(parse_zone(zone_name), earliest, now)
    return starts[-1] if starts else None
