"""Template filters of the web UI: `{% load web %}`."""

from __future__ import annotations

import json
from typing import Any

from django import template

register = template.Library()


@register.filter
def as_json(value: Any) -> str:
    """`value` as indented JSON (escaped by the template like any other text)."""
    return json.dumps(value, indent=2, sort_keys=True, default=str)


@register.filter
def duration(seconds: float | int | None) -> str:
    """A number of seconds as `2 h 05 min`, `3 min 20 s` or `12 s` (— for None)."""
    if seconds is None:
        return "—"
    total = round(float(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours:02d} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"
