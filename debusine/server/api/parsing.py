"""
Parsing request bodies into pydantic models, with problem+json errors for bad input.

The JSON itself is parsed (and refused when PostgreSQL could not store it) by
`debusine.server.api.json_parser`, DRF's parser for every API view.
"""

from __future__ import annotations

import json
from typing import TypeVar

import pydantic
from rest_framework.exceptions import ParseError
from rest_framework.request import Request

from debusine.server.api.errors import ProblemError
from debusine.server.api.json_parser import check_storable_json

RequestModel = TypeVar("RequestModel", bound=pydantic.BaseModel)


def validation_problem(title: str, error: pydantic.ValidationError) -> ProblemError:
    """A 400 problem listing every field pydantic refused, keyed by its dotted location."""
    validation_errors: dict[str, list[str]] = {}
    for item in error.errors(include_url=False):
        location = ".".join(str(part) for part in item["loc"]) or "body"
        validation_errors.setdefault(location, []).append(item["msg"])
    detail = "; ".join(
        f"{location}: {' '.join(messages)}" for location, messages in validation_errors.items()
    )
    return ProblemError(title, detail, validation_errors=validation_errors)


def validate_body(body: object, model: type[RequestModel], title: str) -> RequestModel:
    """
    Validate a parsed JSON body against `model`.

    Unknown top-level keys get the "Invalid fields: ..." problem Debusine clients know; other
    refusals list every problem under `validation_errors`.
    """
    if not isinstance(body, dict):
        raise ProblemError(title, "The request body must be a JSON object.")
    unknown = sorted(set(body) - set(model.model_fields))
    if unknown:
        raise ProblemError(
            f"Invalid fields: {', '.join(unknown)}",
            f"Allowed fields: {', '.join(model.model_fields)}",
        )
    try:
        return model.model_validate(body)
    except pydantic.ValidationError as error:
        raise validation_problem(title, error) from None


def parse_body(
    request: Request, model: type[RequestModel], title: str = "Invalid request"
) -> RequestModel:
    """Validate a DRF request's JSON body against `model` (see `validate_body`)."""
    return validate_body(request.data, model, title)


def parse_json_body(body: bytes, model: type[RequestModel], title: str) -> RequestModel:
    """
    `parse_body()` for views outside DRF: parse and check raw JSON bytes, then validate them.

    Refuses what PostgreSQL could not store, as the API's JSON parser does.
    """
    try:
        data = json.loads(body or b"null")
        check_storable_json(data)
    except (ValueError, ParseError) as error:
        raise ProblemError("Cannot parse the request body", str(error)) from None
    return validate_body(data, model, title)
