"""
Search the logs of a work request, or of every work request of a workflow's tree: the files of
their `debusine:work-request-debug-logs` artifacts, each read up to the file viewer's size cap.
Each match links to its line in the file viewer.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from debusine.protocol.work_requests import TaskType
from debusine.server.db.models import Artifact, FileInArtifact
from debusine.server.file_stores.policies import download_stores
from debusine.server.web.artifacts import file_view_limit, read_head
from debusine.server.web.work_requests import (
    DEBUG_LOGS_CATEGORY,
    descendant_ids_sql,
    visible_work_request,
)

#: At most this many log files are searched, this many matching lines shown per file and in all.
FILE_LIMIT = 200
MATCHES_PER_FILE = 50
MATCH_LIMIT = 1000

CREATED_BY_COLUMN = f"{Artifact._meta.db_table}.created_by_work_request_id"


@dataclass
class FileMatches:
    file: FileInArtifact
    work_request_id: int
    lines: list[tuple[int, str]] = field(default_factory=list)
    more: bool = False


#: Characters other than "\n" that `str.splitlines` ends lines at, in ASCII text.
OTHER_ASCII_LINE_BREAKS = "\r\x0b\x0c\x1c\x1d\x1e"


def matching_lines(text: str, folded: str) -> Iterator[tuple[int, str]]:
    """
    The lines of `text` (numbered as `splitlines` numbers them, from 1) that contain
    `folded` (a casefolded query), ignoring case.

    Logs are mostly ASCII with "\n" line ends: then the whole text is lowercased once (for
    ASCII, casefolding is lowercasing and keeps positions) and searched with `str.find`, and
    only the matching lines are cut out, instead of casefolding every line.
    """
    if not text.isascii() or any(character in text for character in OTHER_ASCII_LINE_BREAKS):
        for number, line in enumerate(text.splitlines(), 1):
            if folded in line.casefold():
                yield number, line
        return
    if not folded.isascii():
        return
    lowered = text.lower()
    number, counted_to = 1, 0
    position = lowered.find(folded)
    while position != -1:
        start = text.rfind("\n", 0, position) + 1
        end = text.find("\n", position)
        end = len(text) if end == -1 else end
        number += text.count("\n", counted_to, start)
        counted_to = start
        yield number, text[start:end]
        position = lowered.find(folded, end + 1)


@require_safe
def search_logs(
    request: HttpRequest, scope: str, workspace: str, work_request_id: int
) -> HttpResponse:
    """`GET …/work-request/<id>/logs/search/?q=`: matching lines of its (tree's) logs."""
    work_request = visible_work_request(request, scope, workspace, work_request_id)
    query = request.GET.get("q", "")[:200].replace("\x00", "")
    results: list[FileMatches] = []
    searched = 0
    truncated = False
    if query:
        files = FileInArtifact.objects.filter(
            artifact__category=DEBUG_LOGS_CATEGORY,
            artifact__workspace=work_request.workspace,
            complete=True,
        ).select_related("file", "artifact")
        if work_request.task_type == TaskType.WORKFLOW:
            table_condition, parameters = descendant_ids_sql(work_request.pk)
            files = files.extra(  # noqa: S610 (fixed SQL; the id is a parameter)
                where=[
                    table_condition.replace("{column}", "db_artifact.created_by_work_request_id")
                ],
                params=parameters,
            )
        else:
            files = files.filter(artifact__created_by_work_request=work_request)
        found = list(files.order_by("artifact_id", "path")[: FILE_LIMIT + 1])
        truncated = len(found) > FILE_LIMIT
        folded = query.casefold()
        limit = file_view_limit()
        total = 0
        found = found[:FILE_LIMIT]
        stores = download_stores(
            work_request.workspace.scope, [item.file for item in found if item.file.size]
        )
        for item in found:
            searched += 1
            item.artifact.workspace = work_request.workspace
            try:
                contents = read_head(item.artifact, item, limit, stores)
            except Http404:
                continue  # contents in no readable store: the file page says so
            text = contents.decode("utf-8", "replace")
            assert item.artifact.created_by_work_request_id is not None
            matches = FileMatches(item, item.artifact.created_by_work_request_id)
            for number, line in matching_lines(text, folded):
                if len(matches.lines) >= MATCHES_PER_FILE or total >= MATCH_LIMIT:
                    matches.more = True
                    break
                matches.lines.append((number, line))
                total += 1
            if matches.lines:
                results.append(matches)
    return render(
        request,
        "web/log_search.html",
        {
            "workspace": work_request.workspace,
            "work_request": work_request,
            "query": query,
            "results": results,
            "searched": searched,
            "truncated": truncated,
        },
    )
