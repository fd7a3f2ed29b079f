"""
Web pages of artifacts: one artifact (category, data, relations both ways, files) and the
file viewer (text and logs with numbered, linkable lines and search, up to a size cap;
a `.deb`'s control data; everything else as a download).
"""

from __future__ import annotations

import html
import io
import json
from pathlib import PurePosixPath
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_safe

from debusine.server.db.models import Artifact, ArtifactRelation, FileInArtifact, FileStore
from debusine.server.file_stores import FileStoreError, get_backend
from debusine.server.file_stores.policies import download_store
from debusine.server.web.access import visible_workspace
from debusine.server.web.debs import DebError, deb_control

#: Suffixes shown as text whatever their content type.
TEXT_SUFFIXES = {
    ".log", ".txt", ".build", ".buildinfo", ".changes", ".dsc", ".json", ".yaml", ".yml",
    ".md", ".rst", ".py", ".sh", ".diff", ".patch", ".xml", ".html", ".csv", ".ini", ".cfg",
}  # fmt: skip

#: How many matching lines a search shows.
SEARCH_LIMIT = 1000

#: How many bytes of a `.deb` are read to find its control archive.
DEB_CONTROL_READ_LIMIT = 16 * 1024 * 1024


def file_view_limit() -> int:
    return int(settings.DEBUSINE_WEB_FILE_VIEW_MAX_SIZE)


def visible_artifact(
    request: HttpRequest, scope: str, workspace: str, artifact_id: int
) -> Artifact:
    """The artifact of that workspace, if the user may see the workspace (else 404)."""
    workspace_object = visible_workspace(request, scope, workspace)
    artifact = (
        Artifact.objects.select_related("created_by", "created_by_work_request")
        .filter(pk=artifact_id, workspace=workspace_object)
        .first()
    )
    if artifact is None:
        raise Http404(f"No artifact {artifact_id}")
    artifact.workspace = workspace_object
    return artifact


@require_safe
def artifact_detail(
    request: HttpRequest, scope: str, workspace: str, artifact_id: int
) -> HttpResponse:
    """`GET /<scope>/<workspace>/artifact/<id>/`."""
    artifact = visible_artifact(request, scope, workspace, artifact_id)
    files = list(
        FileInArtifact.objects.filter(artifact=artifact)
        .select_related("file")
        .order_by("path")[:1000]
    )
    outgoing = list(
        ArtifactRelation.objects.filter(artifact=artifact)
        .select_related("target__workspace__scope")
        .only(
            "id",
            "type",
            "target__id",
            "target__category",
            "target__workspace__name",
            "target__workspace__scope__name",
        )
        .order_by("type", "target_id")[:500]
    )
    incoming = list(
        ArtifactRelation.objects.filter(target=artifact)
        .select_related("artifact__workspace__scope")
        .only(
            "id",
            "type",
            "artifact__id",
            "artifact__category",
            "artifact__workspace__name",
            "artifact__workspace__scope__name",
        )
        .order_by("type", "artifact_id")[:500]
    )
    return render(
        request,
        "web/artifact_detail.html",
        {
            "workspace": artifact.workspace,
            "artifact": artifact,
            "data": json.dumps(artifact.data, indent=2, sort_keys=True),
            "files": files,
            "outgoing": outgoing,
            "incoming": incoming,
        },
    )


def is_text(file_in_artifact: FileInArtifact, head: bytes) -> bool:
    """Text by content type or suffix, or contents that decode as UTF-8 without NULs."""
    content_type = file_in_artifact.content_type or ""
    if (
        content_type.startswith("text/")
        or PurePosixPath(file_in_artifact.path).suffix in TEXT_SUFFIXES
    ):
        return True
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        # A multi-byte character cut by the end of the sample is still text.
        return error.start >= len(head) - 3
    return True


def numbered_lines_html(lines: list[tuple[int, str]], *, searching: bool) -> SafeString:
    """
    The viewer's lines, each a `<span class="line" id="L<n>">` with its number as a link.
    Built here, one f-string per line, rather than by a template loop: a 2 MB log has some
    40,000 lines, which took the template engine seconds (the text is escaped with the
    standard library's html.escape, the same five characters as Django's).
    """
    link = "?#L" if searching else "#L"
    return mark_safe(  # noqa: S308 (each line's text is escaped)
        "".join(
            f'<span class="line" id="L{number}"><a class="ln" href="{link}{number}" '
            f'data-line="{number}">{number}</a>{html.escape(text, quote=True)}\n</span>'
            for number, text in lines
        )
    )


def read_head(
    artifact: Artifact,
    file_in_artifact: FileInArtifact,
    limit: int,
    stores: dict[int, FileStore] | None = None,
) -> bytes:
    """
    The first `limit` bytes of a complete file (404 when no store holds it). `stores` (file
    id -> store, from `download_stores`) saves a query per file when reading many.
    """
    if not file_in_artifact.complete:
        raise Http404("The file is not uploaded yet")
    file = file_in_artifact.file
    if file.size == 0:
        return b""
    if stores is not None:
        store = stores.get(file.pk)
    else:
        store = download_store(artifact.workspace.scope, file)
    if store is None:
        raise Http404("File contents are not available")
    try:
        with get_backend(store).open_contents(file, 0, min(limit, file.size)) as reader:
            return reader.read()
    except FileStoreError:
        raise Http404("File contents are not available") from None


@require_safe
def file_view(
    request: HttpRequest, scope: str, workspace: str, artifact_id: int, path: str
) -> HttpResponse:
    """
    `GET /<scope>/<workspace>/artifact/<id>/file/<path>`: a text file with numbered lines
    (`#L10-20` selects a range), `?search=` lists the matching lines; a `.deb` shows its
    control data; anything else links to the download.
    """
    artifact = visible_artifact(request, scope, workspace, artifact_id)
    file_in_artifact = (
        FileInArtifact.objects.select_related("file").filter(artifact=artifact, path=path).first()
    )
    if file_in_artifact is None:
        raise Http404("No such file in this artifact")
    limit = file_view_limit()
    context: dict[str, Any] = {
        "workspace": artifact.workspace,
        "artifact": artifact,
        "file": file_in_artifact,
        "download_url": f"/{scope}/{workspace}/artifact/{artifact.pk}/download/{path}",
        "limit": limit,
        "lines": None,
        "deb": None,
        "deb_error": None,
        "search": request.GET.get("search", "")[:200],
    }
    if path.endswith(".deb") and file_in_artifact.complete:
        head = read_head(artifact, file_in_artifact, DEB_CONTROL_READ_LIMIT)
        try:
            context["deb"] = deb_control(io.BytesIO(head))
        except DebError as error:
            context["deb_error"] = str(error)
        return render(request, "web/file_view.html", context)
    if not file_in_artifact.complete:
        return render(request, "web/file_view.html", context)
    head = read_head(artifact, file_in_artifact, limit)
    if not is_text(file_in_artifact, head[:8192]):
        return render(request, "web/file_view.html", context)
    text = head.decode("utf-8", "replace")
    lines = list(enumerate(text.splitlines(), 1))
    context["truncated"] = file_in_artifact.file.size > limit
    context["line_count"] = len(lines)
    if search := context["search"]:
        folded = search.casefold()
        matches = [line for line in lines if folded in line[1].casefold()]
        context["match_count"] = len(matches)
        lines = matches[:SEARCH_LIMIT]
    context["lines"] = lines
    context["lines_html"] = numbered_lines_html(lines, searching=bool(search))
    return render(request, "web/file_view.html", context)
