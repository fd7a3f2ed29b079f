"""
The UI's stylesheet and script, served from the package (no build step, no collectstatic).

They are small and change only with the code: each response carries an ETag of its contents
and may be cached for a day.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotModified
from django.views.decorators.http import require_safe

ASSET_DIRECTORY = Path(__file__).parent / "static" / "web"
CONTENT_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


@functools.cache
def load_asset(name: str) -> tuple[bytes, str] | None:
    """The contents and ETag of a shipped asset, or None (names are never joined blindly)."""
    shipped = {path.name: path for path in ASSET_DIRECTORY.iterdir() if path.is_file()}
    path = shipped.get(name)
    if path is None or path.suffix not in CONTENT_TYPES:
        return None
    contents = path.read_bytes()
    return contents, '"' + hashlib.sha256(contents).hexdigest()[:32] + '"'


@require_safe
def asset(request: HttpRequest, name: str) -> HttpResponse:
    """`GET /-/static/<name>`: one of the UI's assets."""
    loaded = load_asset(name)
    if loaded is None:
        raise Http404("No such asset")
    contents, etag = loaded
    if request.headers.get("If-None-Match") == etag:
        response: HttpResponse = HttpResponseNotModified()
    else:
        response = HttpResponse(contents, content_type=CONTENT_TYPES[Path(name).suffix])
    response["ETag"] = etag
    response["Cache-Control"] = "public, max-age=86400"
    return response
