"""
The JSON parser of every API view (DRF's DEFAULT_PARSER_CLASSES).

It refuses with a 400 what would otherwise fail later with a 500: bodies nested deep enough to
exhaust recursion, NUL characters and unpaired surrogates (legal JSON escapes that PostgreSQL
refuses in text and JSONB columns). It imports nothing of the API views, because DRF loads it
while `rest_framework.views` itself is being imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

#: Deepest nesting of arrays and objects accepted in a request body. Real bodies (task data,
#: artifact data) nest a handful of levels; a limit keeps later recursive code (validation,
#: JSON encoding, PostgreSQL's JSONB parser) far from its own recursion limits.
MAX_JSON_DEPTH = 64


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
        try:
            body = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
        check_storable_json(body)
        return body
