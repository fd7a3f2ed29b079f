"""
The JSON parser of every API view (DRF's DEFAULT_PARSER_CLASSES).

It refuses with a 400 what would otherwise fail later with a 500: bodies nested deep enough to
exhaust recursion, NUL characters and unpaired surrogates (legal JSON escapes that PostgreSQL
refuses in text and JSONB columns). It imports nothing of the API views, because DRF loads it
while `rest_framework.views` itself is being imported.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser

#: Deepest nesting of arrays and objects accepted in a request body. Real bodies (task data,
#: artifact data) nest a handful of levels; a limit keeps later recursive code (validation,
#: JSON encoding, PostgreSQL's JSONB parser) far from its own recursion limits.
MAX_JSON_DEPTH = 64


class BodyTooLargeError(APIException):
    """A JSON body over DATA_UPLOAD_MAX_MEMORY_SIZE: a 413 problem (see `errors`)."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "body_too_large"


def body_limit_detail() -> str:
    """The detail of a 413 for a JSON body: what the limit is and which setting sets it."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return (
        f"The request body is larger than {limit} bytes, the limit of JSON request bodies "
        "(DEBUSINE_MAX_REQUEST_BODY_SIZE)."
    )


def read_limited(stream: IO[Any]) -> bytes:
    """
    The body from `stream`, or BodyTooLargeError past DATA_UPLOAD_MAX_MEMORY_SIZE.

    DRF hands the parser Django's request stream, which Django does not limit (only
    `request.body` is): without this a JSON body of any size would be parsed.
    """
    limit: int | None = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    body: bytes = stream.read() if limit is None else stream.read(limit + 1)
    if limit is not None and len(body) > limit:
        raise BodyTooLargeError(body_limit_detail())
    return body


def unstorable_string_problem(value: str) -> str | None:
    """Why PostgreSQL cannot store `value` as text or JSONB, or None if it can."""
    if "\x00" in value:
        return "contains the NUL character (\\u0000), which PostgreSQL cannot store"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "contains an unpaired surrogate (\\ud800-\\udfff), which is not valid Unicode"
    return None


def check_storable_json(body: Any) -> None:
    """
    Raise ParseError if `body` nests too deeply or holds a string no column can store.

    Checked once for the whole body, keys included, so that no view can reach the database
    with such a string and fail there with a 500. Iterative: the depth is what is checked.
    """
    pending: list[tuple[Any, str, int]] = [(body, "body", 0)]
    while pending:
        value, location, depth = pending.pop()
        if isinstance(value, str):
            if (problem := unstorable_string_problem(value)) is not None:
                raise ParseError(f"The string at {location} {problem}")
        elif isinstance(value, list | Mapping):
            if depth >= MAX_JSON_DEPTH:
                raise ParseError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels at {location}")
            if isinstance(value, list):
                pending.extend(
                    (item, f"{location}[{index}]", depth + 1) for index, item in enumerate(value)
                )
                continue
            for key, item in value.items():
                if (problem := unstorable_string_problem(key)) is not None:
                    raise ParseError(f"A key of {location} {problem}")
                pending.append((item, f"{location}.{key}", depth + 1))


class StorableJSONParser(JSONParser):
    """
    DRF's JSON parser, refusing with a 400 what would otherwise fail later with a 500.

    Those are bodies nested deep enough to exhaust the parser's recursion, NUL characters and
    unpaired surrogates (legal JSON escapes that PostgreSQL refuses in text and JSONB).
    """

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        raw = read_limited(stream)
        try:
            body = super().parse(io.BytesIO(raw), media_type, parser_context)
        except RecursionError:
            raise ParseError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
        check_storable_json(body)
        return body
