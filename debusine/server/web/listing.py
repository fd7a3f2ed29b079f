"""
Work request listings shared by pages: the columns a row shows, filters, keyset pagination.

Rows load only the columns they show (never the task data), newest first; a page is found
by id (`?before=ID` for older, `?after=ID` for newer), so its cost does not grow with the
history.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from django.http import QueryDict
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe

from debusine.protocol.work_requests import WorkRequestStatus
from debusine.server.db.models import WorkRequest
from debusine.server.db.models.work_requests import WorkRequestQuerySet

#: The columns of a work request row (worker__name through select_related("worker")).
WORK_REQUEST_ROW_FIELDS = (
    "id",
    "workspace_id",
    "task_type",
    "task_name",
    "status",
    "result",
    "created_at",
    "started_at",
    "completed_at",
    "parent_id",
    "worker__name",
)

PAGE_SIZE = 50


class InvalidFilterError(ValueError):
    """A filter value the listing cannot apply (shown to the user with a 400)."""


@dataclass
class WorkRequestFilters:
    """The filters of a work request listing, from its query string."""

    status: str = ""
    task: str = ""
    worker: str = ""
    workflow: int | None = None
    errors: list[str] = field(default_factory=list)

    @classmethod
    def from_query(cls, query: QueryDict) -> WorkRequestFilters:
        filters = cls(
            status=query.get("status", "").strip(),
            task=query.get("task", "").strip(),
            worker=query.get("worker", "").strip(),
        )
        if filters.status and filters.status not in set(WorkRequestStatus):
            filters.errors.append(
                f"Unknown status {filters.status!r}: one of "
                + ", ".join(status.value for status in WorkRequestStatus)
            )
        if workflow := query.get("workflow", "").strip():
            if not workflow.isdigit() or len(workflow) > 18:
                filters.errors.append(f"workflow={workflow!r} is not a work request id")
            else:
                filters.workflow = int(workflow)
        for name in ("task", "worker"):
            if "\x00" in getattr(filters, name):
                filters.errors.append(f"{name} cannot contain NUL characters")
        return filters

    def apply(self, queryset: WorkRequestQuerySet) -> WorkRequestQuerySet:
        if self.status:
            queryset = queryset.filter(status=self.status)
        if self.task:
            queryset = queryset.filter(task_name=self.task)
        if self.worker:
            queryset = queryset.filter(worker__name=self.worker)
        if self.workflow is not None:
            queryset = queryset.filter(parent_id=self.workflow)
        return queryset


@dataclass
class Page:
    """One page of rows, newest first, and the ids that link to its neighbours."""

    rows: list[WorkRequest]
    older_than: int | None
    newer_than: int | None


def parse_id(query: QueryDict, name: str) -> int | None:
    value = query.get(name, "")
    if not value:
        return None
    if not value.isdigit() or len(value) > 18:
        raise InvalidFilterError(f"{name}={value!r} is not a work request id")
    return int(value)


def keyset_page(queryset: WorkRequestQuerySet, query: QueryDict, size: int = PAGE_SIZE) -> Page:
    """The page `?before=` / `?after=` asks for (the newest page without either)."""
    before, after = parse_id(query, "before"), parse_id(query, "after")
    if after is not None:
        rows = list(queryset.filter(pk__gt=after).order_by("pk")[: size + 1])
        more = len(rows) > size
        rows = rows[:size]
        rows.reverse()
        return Page(rows, rows[-1].pk if rows else None, rows[0].pk if more and rows else None)
    if before is not None:
        queryset = queryset.filter(pk__lt=before)
    rows = list(queryset.order_by("-pk")[: size + 1])
    more = len(rows) > size
    rows = rows[:size]
    return Page(
        rows,
        rows[-1].pk if more else None,
        rows[0].pk if before is not None and rows else None,
    )


# --- Rendering rows ---------------------------------------------------------------------------
#
# Tables of work requests are rendered here rather than in a template loop: with hundreds of
# rows (a workflow's tree) the template engine's per-row cost (`{% url %}`, filters) was most
# of the page's time, and then format_html's (its lazy-aware escaping of each argument): now
# one f-string per row, every value escaped with the standard library's html.escape.


def short_duration(seconds: float) -> str:
    """`42 s`, `3 min 5 s`, `2 h 4 min`, `3 d 1 h`."""
    whole = int(seconds)
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


class RowValues(NamedTuple):
    """The values one row shows (from a model, or straight from a query)."""

    pk: int
    task_type: str
    task_name: str
    status: str
    result: str
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    worker_name: str | None

    @classmethod
    def of(cls, row: WorkRequest) -> RowValues:
        worker = row.worker if row.worker_id is not None else None
        return cls(
            row.pk,
            row.task_type,
            row.task_name,
            row.status,
            row.result,
            row.created_at,
            row.started_at,
            row.completed_at,
            worker.name if worker is not None else None,
        )


def duration_text(row: RowValues, now: datetime) -> str:
    if row.started_at is None:
        return ""
    if row.completed_at is not None:
        return short_duration((row.completed_at - row.started_at).total_seconds())
    return "running " + short_duration((now - row.started_at).total_seconds())


def _escape(value: object) -> str:
    """
    HTML-escaped text, the same five characters as Django's `escape`, without its lazy-string
    wrapper: rows are rendered by the hundred.
    """
    return html.escape(str(value), quote=True)


def work_request_cells(row: RowValues, prefix: str, now: datetime, depth: int = 0) -> str:
    """The cells of one row: id and task (a link), status, result, worker, created, duration."""
    indent = f' style="padding-left: {depth * 1.2}em" class="depth-{depth}"' if depth else ""
    kind = ""
    if row.task_type != "Worker":
        kind = f' <span class="badge">{_escape(row.task_type)}</span>'
    result = ""
    if row.result:
        escaped = _escape(row.result)
        result = f'<span class="result result-{escaped}">{escaped}</span>'
    status = _escape(row.status)
    created = row.created_at.isoformat()
    return (
        f'<td{indent}><a href="{_escape(prefix)}work-request/{row.pk}/">{row.pk}</a> '
        f"{_escape(row.task_name)}{kind}</td>"
        f'<td><span class="status status-{status}">{status}</span></td><td>{result}</td>'
        f"<td>{_escape(row.worker_name or '')}</td>"
        f'<td title="{created}">{created[:19].replace("T", " ")}</td>'
        f"<td>{_escape(duration_text(row, now))}</td>"
    )


def work_request_rows(
    rows: Sequence[WorkRequest | RowValues], prefix: str, depths: list[int] | None = None
) -> SafeString:
    """`<tr>`s of `rows` (links under `prefix`, `/<scope>/<workspace>/`)."""
    now = timezone.now()
    if not rows:
        return mark_safe('<tr><td colspan="6">No work requests.</td></tr>')
    values = [row if isinstance(row, RowValues) else RowValues.of(row) for row in rows]
    return mark_safe(  # noqa: S308 (every value in the cells is escaped)
        "\n".join(
            f"<tr>{work_request_cells(row, prefix, now, depths[index] if depths else 0)}</tr>"
            for index, row in enumerate(values)
        )
    )
