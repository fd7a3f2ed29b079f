"""
Tests of the OpenAPI description served at `/api/schema/`, against protocol.md.

PROTOCOL_ENDPOINTS is protocol.md §2's endpoint tables, transcribed (method, path, success
statuses, and which of them have an empty body); when protocol.md is found (beside the
checkout as `shared/protocol.md`, or at $DEBUSINE_PROTOCOL_MD) the transcription is checked
against it too. Every endpoint of protocol.md is described, or listed in NOT_SERVED and
really not served (a 404 problem): implementing one without describing it fails here.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from django.test import Client
from django.urls import Resolver404, resolve

from debusine.server.api import openapi

#: (method, protocol.md path, success statuses, statuses whose body is empty).
PROTOCOL_ENDPOINTS: list[tuple[str, str, set[int], set[int]]] = [
    ("POST", "/1.0/worker/register/", {201}, {201}),
    ("PUT", "/1.0/worker/dynamic-metadata/", {204}, {204}),
    ("GET", "/1.0/work-request/get-next-for-worker/", {200, 204}, {204}),
    ("PUT", "/1.0/work-request/{id}/completed/", {200}, {200}),
    ("GET", "/1.0/work-request/", {200}, set()),
    ("POST", "/1.0/work-request/", {200}, set()),
    ("GET", "/1.0/work-request/{id}/", {200}, set()),
    ("PATCH", "/1.0/work-request/{id}/", {200}, set()),
    ("POST", "/1.0/work-request/{id}/retry/", {200}, set()),
    ("POST", "/1.0/work-request/{id}/abort/", {200}, set()),
    ("POST", "/1.0/work-request/{id}/unblock/", {200}, set()),
    ("GET", "/1.0/work-request/{id}/external-debsign/", {200}, set()),
    ("POST", "/1.0/work-request/{id}/external-debsign/", {200}, set()),
    ("POST", "/1.0/artifact/", {201}, set()),
    ("GET", "/1.0/artifact/{id}/", {200}, set()),
    ("PUT", "/1.0/artifact/{id}/files/{path}/", {200, 201, 206}, {200, 201, 206}),
    ("POST", "/1.0/artifact-relation/", {200, 201}, set()),
    ("GET", "/1.0/artifact-relation/", {200}, set()),
    ("DELETE", "/1.0/artifact-relation/{id}/", {204}, {204}),
    ("POST", "/1.0/lookup/single/", {200}, set()),
    ("POST", "/1.0/lookup/multiple/", {200}, set()),
    ("GET", "/1.0/task-configuration/{workspace}/{name}/", {200}, set()),
    ("POST", "/1.0/task-configuration/{workspace}/{name}/", {200}, set()),
    ("GET", "/1.0/workspace/{workspace}/inheritance/", {200}, set()),
    ("POST", "/1.0/workspace/{workspace}/inheritance/", {200}, set()),
    ("POST", "/1.0/workflow-template/", {201}, set()),
    ("GET", "/1.0/workflow-template/{id}/", {200}, set()),
    ("POST", "/1.0/workflow/", {201}, set()),
    ("POST", "/1.0/asset/", {201}, set()),
    ("GET", "/1.0/asset/", {200}, set()),
    ("POST", "/1.0/asset/{category}/{slug}/{permission}/", {200}, set()),
    ("GET", "/1.0/whoami/", {200}, set()),
    ("GET", "/1.0/service-status/", {200}, set()),
    ("GET", "/1.0/open-metrics/", {200}, set()),
]

#: protocol.md endpoints this server does not serve (yet): not described, and a 404 problem.
NOT_SERVED = {
    "/1.0/work-request/{id}/external-debsign/",
    "/1.0/workspace/{workspace}/inheritance/",
    "/1.0/asset/",
    "/1.0/asset/{category}/{slug}/{permission}/",
}

#: What Debusine's client and worker require in the objects they parse (protocol.md §5.2).
REQUIRED_FIELDS = {
    "WorkRequestResponse": {
        "id", "url", "created_at", "status", "result", "task_type", "task_name",
        "task_data", "priority_base", "priority_adjustment", "artifacts", "workspace",
    },
    "ArtifactResponse": {
        "id", "url", "workspace", "category", "created_at", "data", "download_tar_gz_url",
        "files_to_upload",
    },
    "FileResponse": {"size", "checksums", "type", "url"},
    "RelationResponse": {"id", "artifact", "target", "type"},
    "LookupResponse": {"result_type"},
}  # fmt: skip


ENDPOINT_ROW = r"^\| `(GET|POST|PUT|PATCH|DELETE) (/1\.0/[^` ]*)`"
SEVERAL_METHODS_ROW = r"^\| `GET`/[^ ]* (/1\.0/[^` ]*)`"


def protocol_md() -> Path | None:
    configured = os.environ.get("DEBUSINE_PROTOCOL_MD")
    candidates = [Path(configured)] if configured else []
    root = Path(__file__).resolve().parents[4]
    candidates += [root.parent / "shared" / "protocol.md", root / "shared" / "protocol.md"]
    return next((path for path in candidates if path.is_file()), None)


def concrete(path: str) -> str:
    """A protocol path with example values, to send or resolve."""
    values = {"id": "1", "path": "f.txt", "workspace": "System", "name": "x"}
    return "/api" + re.sub(r"\{(\w+)\}", lambda m: values.get(m[1], "x"), path)


def described(document: dict[str, Any], method: str, path: str) -> dict[str, Any] | None:
    """The operation of `document` for a protocol.md path (its parameter names may differ)."""
    pattern = re.escape("/api" + path)
    pattern = re.sub(r"\\\{\w+\\\}", r"\\{\\w+\\}", pattern)
    for template, item in document["paths"].items():
        if re.fullmatch(pattern, template) and method.lower() in item:
            operation: dict[str, Any] = item[method.lower()]
            return operation
    return None


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi.openapi_document()


def test_the_transcription_matches_protocol_md() -> None:
    source = protocol_md()
    if source is None:
        # The transcription above stands alone; CI has protocol.md beside the checkout.
        return
    text = source.read_text()
    listed = {
        (method, path.split("?")[0])
        for method, path in re.findall(
            r"^\| `(GET|POST|PUT|PATCH|DELETE) (/1\.0/[^` ]*)`", text, re.M
        )
    }
    # One row lists several methods: "`GET`/`PUT`/`PATCH`/`DELETE /1.0/...`" (we keep GET).
    listed |= {
        ("GET", path) for path in re.findall(r"^\| `GET`/[^ ]* (/1\.0/[^` ]*)`", text, re.M)
    }
    assert listed == {(method, path) for method, path, _ok, _empty in PROTOCOL_ENDPOINTS}


@pytest.mark.parametrize(("method", "path", "ok", "empty"), PROTOCOL_ENDPOINTS)
def test_every_protocol_endpoint_is_described_or_not_served(
    document: dict[str, Any], method: str, path: str, ok: set[int], empty: set[int]
) -> None:
    operation = described(document, method, path)
    if path in NOT_SERVED:
        assert operation is None
        with pytest.raises(Resolver404):
            resolve(concrete(path))
        return
    assert operation is not None, f"{method} {path} is not described"
    responses = operation["responses"]
    assert {int(code) for code in responses if code.isdigit() and int(code) < 300} == ok
    for code in ok:
        assert ("content" not in responses[str(code)]) == (code in empty), (code, responses)
    for status_range in ("4XX", "5XX"):
        content = responses[status_range]["content"]
        assert content == {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        }


def test_response_objects_have_what_debusine_peers_require(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for name, fields in REQUIRED_FIELDS.items():
        assert fields <= set(schemas[name]["properties"]), name
    assert set(schemas["Problem"]["required"]) == {"title", "detail", "status"}


def test_every_api_route_is_described(document: dict[str, Any]) -> None:
    routes = openapi.api_routes()
    assert len(routes) >= 16
    for name, route in routes:
        template, _parameters = openapi.openapi_path(route)
        assert template in document["paths"], name
    # A route without an OPERATIONS entry cannot be described: generation refuses it.
    saved = openapi.OPERATIONS.pop("api-whoami")
    try:
        with pytest.raises(LookupError, match="api-whoami"):
            openapi.openapi_document()
    finally:
        openapi.OPERATIONS["api-whoami"] = saved


def test_the_served_schema_is_valid_openapi(db: None, document: dict[str, Any]) -> None:
    response = Client().get("/api/schema/")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    served = response.json()
    assert served == json.loads(json.dumps(document))
    assert served["openapi"].startswith("3.")
    loaded = schemathesis.openapi.from_dict(served)
    labels = {
        result.ok().label  # type: ignore[union-attr]
        for result in loaded.get_all_operations()
    }
    assert "POST /api/1.0/work-request/" in labels
    assert len(labels) == sum(
        1 for item in served["paths"].values() for key in item if key != "parameters"
    )


def test_only_get_is_served(db: None) -> None:
    response = Client().post("/api/schema/")
    assert response.status_code == 405
    assert response["Content-Type"] == "application/problem+json"
