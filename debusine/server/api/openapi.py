"""
The OpenAPI 3.1 description of API 1.0, served at `/api/schema/`.

Generated, not written: the paths come from the URL configuration of `/api/1.0/`
(`debusine.server.api.urls`), the bodies from the pydantic models of `debusine.protocol` (the
same models the views parse requests with and our client parses responses with). What a URL
pattern cannot say (methods, status codes, which model) is in OPERATIONS, keyed by the pattern's
name: a named API route without an entry there is an error, so the description cannot silently
miss an endpoint (`debusine/server/api/tests/test_openapi.py` also checks it against
protocol.md).

Every error is a problem document (`application/problem+json`, the `Problem` schema), whatever
the operation: they are described once per operation as the `4XX` and `5XX` responses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.urls import URLPattern, URLResolver, path
from django.views.decorators.http import require_GET
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from debusine.protocol.artifacts import (
    ArtifactCreateRequest,
    ArtifactResponse,
    RelationCreateRequest,
    RelationResponse,
)
from debusine.protocol.collections import (
    CollectionCreateRequest,
    CollectionItemResponse,
    CollectionRelationResponse,
    CollectionRelationSetRequest,
    CollectionRelationSetResponse,
    CollectionResponse,
    CollectionUpdateRequest,
    TokenGrantRequest,
    TokenGrantResponse,
)
from debusine.protocol.lookups import (
    LookupMultipleRequest,
    LookupResponse,
    LookupSingleRequest,
    V016LookupMultipleRequest,
    V016LookupResponse,
    V016LookupSingleRequest,
)
from debusine.protocol.monitoring import ServiceStatus
from debusine.protocol.task_configuration import (
    TaskConfigurationPushRequest,
    TaskConfigurationPushResult,
)
from debusine.protocol.wire import NumberedPage
from debusine.protocol.work_requests import (
    WorkRequestCreateRequest,
    WorkRequestPatchRequest,
    WorkRequestResponse,
    WorkRequestUnblockRequest,
)
from debusine.protocol.workers import WorkerRegisterRequest, WorkRequestCompletedRequest
from debusine.protocol.workflows import (
    WorkflowCreateRequest,
    WorkflowTemplateCreateRequest,
    WorkflowTemplateResponse,
    WorkflowTemplateUpdateRequest,
    WorkspaceTemplateCreateRequest,
    WorkspaceTemplateResponse,
    WorkspaceTemplateUpdateRequest,
)

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1.0"

#: A body the protocol defines as empty (Debusine peers need zero bytes).
EMPTY = "empty"
#: Any JSON object (dynamic metadata).
OBJECT = "object"
#: Raw bytes (file upload chunks).
BYTES = "bytes"
#: Plain text (the Prometheus exposition format).
TEXT = "text"

Body = type[BaseModel] | str | dict[str, Any] | None


@dataclass(frozen=True)
class Response:
    """One success response: a description and its body."""

    description: str
    body: Body = EMPTY
    #: A JSON list of `body` instead of one.
    many: bool = False
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Operation:
    """One method of one route."""

    method: str
    summary: str
    #: Who may call it (protocol.md §2): "worker", "user", "user or worker", "any", "none".
    auth: str
    responses: dict[int, Response]
    request: Body = None
    query: dict[str, dict[str, Any]] = field(default_factory=dict)
    headers: dict[str, dict[str, Any]] = field(default_factory=dict)


WHOAMI_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "user": {"type": "string"},
        "auth": {"type": "boolean"},
        "worker_token": {"type": "boolean"},
    },
    "required": ["user", "auth", "worker_token"],
}
RANGE_HEADER = {"Range": "`bytes=0-N`: N is the number of bytes received so far"}
ETAG_HEADER = {"ETag": "The entity tag to send back in `If-Match`"}
#: `If-Match` (optional, 412 when stale) is told in the summaries, not declared as a header
#: parameter: the fuzzing test would send values no HTTP server accepts as a header.
IF_MATCH_NOTE = " (optional `If-Match`: 412 when it names a tag that is no longer current)"
PAGE_QUERY: dict[str, dict[str, Any]] = {"page": {"type": "integer", "minimum": 1}}

OPERATIONS: dict[str, list[Operation]] = {
    "api-worker-register": [
        Operation(
            "post",
            "Register a worker under the token it generated (disabled until an admin enables "
            "it), or activate a pre-created worker with an activation token in `Token`",
            "none",
            {201: Response("Registered")},
            request=WorkerRegisterRequest,
        )
    ],
    "api-worker-dynamic-metadata": [
        Operation(
            "put",
            "Replace the calling worker's dynamic metadata",
            "worker",
            {204: Response("Stored")},
            request=OBJECT,
        )
    ],
    "api-work-request-get-next": [
        Operation(
            "get",
            "The next work request assigned to the calling worker, which is then running",
            "worker",
            {
                200: Response("The work request", WorkRequestResponse),
                204: Response("Nothing is assigned to this worker"),
            },
        ),
        Operation(
            "post",
            "The same, as Debusine 0.16 workers ask (body `{}`): task data in their shape, "
            "plus the `token` their task authenticates with",
            "worker",
            {
                200: Response("The work request", WorkRequestResponse),
                204: Response("Nothing is assigned to this worker"),
            },
            request=OBJECT,
        ),
    ],
    "api-work-request-completed": [
        Operation(
            "put",
            "Report the outcome of a work request assigned to the calling worker",
            "worker",
            {200: Response("Recorded (or stale: ignored)")},
            request=WorkRequestCompletedRequest,
        )
    ],
    "api-work-requests": [
        Operation(
            "get",
            "Work requests the caller may see, newest first (cursor pagination)",
            "any",
            {200: Response("A page", "WorkRequestPage")},
            query={"cursor": {"type": "string"}},
        ),
        Operation(
            "post",
            "Create a work request",
            "user",
            {200: Response("Created (200, not 201, as Debusine answers)", WorkRequestResponse)},
            request=WorkRequestCreateRequest,
        ),
    ],
    "api-work-request": [
        Operation("get", "One work request", "any", {200: Response("It", WorkRequestResponse)}),
        Operation(
            "patch",
            "Change a work request's priority adjustment",
            "user",
            {200: Response("Changed", WorkRequestResponse)},
            request=WorkRequestPatchRequest,
        ),
    ],
    "api-work-request-retry": [
        Operation(
            "post",
            "Retry a failed or aborted work request: a new one supersedes it",
            "user",
            {200: Response("The new work request", WorkRequestResponse)},
            request={"type": "object"},
        )
    ],
    "api-work-request-abort": [
        Operation(
            "post",
            "Abort a pending, blocked or running work request",
            "user",
            {200: Response("Aborted", WorkRequestResponse)},
            request={"type": "object"},
        )
    ],
    "api-work-request-unblock": [
        Operation(
            "post",
            "Review a blocked manual-unblock work request: record notes, accept (it becomes "
            "pending) or reject (it is aborted)",
            "user",
            {200: Response("Reviewed", WorkRequestResponse)},
            request=WorkRequestUnblockRequest,
        )
    ],
    "api-artifact-create": [
        Operation(
            "post",
            "Create an artifact; its files not already stored are listed in files_to_upload "
            "(also served without the trailing slash)",
            "user or worker",
            {201: Response("Created", ArtifactResponse)},
            request=ArtifactCreateRequest,
        )
    ],
    "api-artifact": [
        Operation("get", "One artifact", "any", {200: Response("It", ArtifactResponse)})
    ],
    "api-work-request-live-log": [
        Operation(
            "get",
            "The live log a Debusine 0.16 worker streams while running the work request "
            "(`?after=N`: from position N)",
            "any",
            {200: Response("`{frames, next, status}`", OBJECT)},
        )
    ],
    "api-workspace-artifact": [
        Operation(
            "get",
            "One artifact, as seen from a workspace (Debusine 0.16 tasks fetch their inputs so)",
            "any",
            {200: Response("It", ArtifactResponse)},
        )
    ],
    "artifact-file-upload": [
        Operation(
            "put",
            "Upload (part of) a file of an artifact: an empty body with `Content-Range: "
            "bytes */SIZE` probes, a chunk sends `bytes START-END/SIZE`",
            "user or worker",
            {
                200: Response("Chunk stored (Range says how much), or probe: complete"),
                201: Response("The file is complete and verified"),
                206: Response("Probe: where to resume", headers=RANGE_HEADER),
                409: Response("The SHA-256 does not match: upload the file again", "Problem"),
            },
            request=BYTES,
            headers={"Content-Range": {"type": "string"}},
        )
    ],
    "api-artifact-relations": [
        Operation(
            "get",
            "Relations of an artifact (`artifact`) or to it (`target_artifact`)",
            "any",
            {200: Response("The relations", RelationResponse, many=True)},
            query={"artifact": {"type": "integer"}, "target_artifact": {"type": "integer"}},
        ),
        Operation(
            "post",
            "Relate two artifacts",
            "user or worker",
            {
                200: Response("Already related", RelationResponse),
                201: Response("Created", RelationResponse),
            },
            request=RelationCreateRequest,
        ),
    ],
    "api-artifact-relation": [
        Operation("delete", "Remove a relation", "user or worker", {204: Response("Removed")})
    ],
    "api-lookup-single": [
        Operation(
            "post",
            "Resolve a lookup for a work request assigned to the calling worker (worker token, "
            "no `workspace`; Debusine 0.11/0.12), or in a workspace (user token, `workspace` "
            "given: the `V016LookupSingleRequest` body and `V016LookupResponse` answer)",
            "user or worker",
            {200: Response("The match", LookupResponse)},
            request=LookupSingleRequest,
        ),
    ],
    "api-lookup-multiple": [
        Operation(
            "post",
            "Resolve a multiple lookup for a work request assigned to the calling worker, or "
            "(with `workspace`, user token: Debusine 0.16) in a workspace",
            "user or worker",
            {200: Response("The matches", LookupResponse, many=True)},
            request=LookupMultipleRequest,
        ),
    ],
    "api-whoami": [
        Operation("get", "Who the token authenticates", "any", {200: Response("", WHOAMI_SCHEMA)})
    ],
    "api-workflow-templates": [
        Operation(
            "post",
            "Create a workflow template in a workspace the caller may configure (a positive "
            "priority needs the priority permission)",
            "user",
            {201: Response("Created", WorkflowTemplateResponse)},
            request=WorkflowTemplateCreateRequest,
        )
    ],
    "api-workflow-template": [
        Operation(
            "get", "One workflow template", "user", {200: Response("It", WorkflowTemplateResponse)}
        ),
        Operation(
            "put",
            "Replace a workflow template (name and task_name required)",
            "user",
            {200: Response("Replaced", WorkflowTemplateResponse)},
            request=WorkflowTemplateUpdateRequest,
        ),
        Operation(
            "patch",
            "Change some fields of a workflow template",
            "user",
            {200: Response("Changed", WorkflowTemplateResponse)},
            request=WorkflowTemplateUpdateRequest,
        ),
        Operation(
            "delete",
            "Delete a workflow template" + IF_MATCH_NOTE,
            "user",
            {204: Response("Deleted")},
        ),
    ],
    "api-workflows": [
        Operation(
            "post",
            "Start a workflow from a template (the template's task data wins over the caller's)",
            "user",
            {201: Response("The workflow's root work request", WorkRequestResponse)},
            request=WorkflowCreateRequest,
        )
    ],
    "api-workspace-workflow-templates": [
        Operation(
            "get",
            "The workspace's workflow templates by name (Debusine 0.16)",
            "user",
            {200: Response("A page", NumberedPage[WorkspaceTemplateResponse])},
            query=PAGE_QUERY,
        ),
        Operation(
            "post",
            "Create a workflow template (Debusine 0.16 shape; workspace owners)",
            "user",
            {201: Response("Created", WorkspaceTemplateResponse, headers=ETAG_HEADER)},
            request=WorkspaceTemplateCreateRequest,
        ),
    ],
    "api-workspace-workflow-template": [
        Operation(
            "get",
            "One workflow template, by id (all digits) or name",
            "user",
            {200: Response("It", WorkspaceTemplateResponse, headers=ETAG_HEADER)},
        ),
        Operation(
            "patch",
            "Change a workflow template (keys of the object as read are ignored)" + IF_MATCH_NOTE,
            "user",
            {200: Response("Changed", WorkspaceTemplateResponse, headers=ETAG_HEADER)},
            request=WorkspaceTemplateUpdateRequest,
        ),
        Operation(
            "delete",
            "Delete a workflow template" + IF_MATCH_NOTE,
            "user",
            {204: Response("Deleted")},
        ),
    ],
    "api-collections": [
        Operation(
            "get",
            "The workspace's collections but workflow-internal ones, by category and name",
            "user",
            {200: Response("A page", NumberedPage[CollectionResponse])},
            query=PAGE_QUERY,
        ),
        Operation(
            "post",
            "Create a collection (configure permission)",
            "user",
            {201: Response("Created", CollectionResponse, headers=ETAG_HEADER)},
            request=CollectionCreateRequest,
        ),
    ],
    "api-collection": [
        Operation(
            "get",
            "One collection by id (`?stats=1` adds item counts)",
            "user",
            {200: Response("It", CollectionResponse, headers=ETAG_HEADER)},
            query={"stats": {"type": "string"}},
        ),
        Operation(
            "patch",
            "Change a collection (not its category; keys of the object as read are ignored)"
            + IF_MATCH_NOTE,
            "user",
            {200: Response("Changed", CollectionResponse, headers=ETAG_HEADER)},
            request=CollectionUpdateRequest,
        ),
        Operation(
            "delete",
            "Delete a collection and its item history" + IF_MATCH_NOTE,
            "user",
            {204: Response("Deleted")},
        ),
    ],
    "api-collection-by-name": [
        Operation(
            "get",
            "One collection by category and name (`_` for singletons)",
            "user",
            {200: Response("It", CollectionResponse, headers=ETAG_HEADER)},
            query={"stats": {"type": "string"}},
        )
    ],
    "api-collection-items": [
        Operation(
            "get",
            "The collection's active items by name",
            "user",
            {200: Response("A page", NumberedPage[CollectionItemResponse])},
            query={
                **PAGE_QUERY,
                "name__startswith": {"type": "string"},
                "category": {"type": "string"},
            },
        )
    ],
    "api-collection-item": [
        Operation("get", "One active item", "user", {200: Response("It", CollectionItemResponse)}),
        Operation(
            "delete",
            "Remove an item (it stays as history)",
            "user",
            {204: Response("Removed")},
        ),
    ],
    "api-collection-tokens": [
        Operation(
            "get",
            "Roles granted to external tokens on the collection (configure permission)",
            "user",
            {200: Response("A page", NumberedPage[TokenGrantResponse])},
            query=PAGE_QUERY,
        ),
        Operation(
            "post",
            "Grant a role to an existing external-user token or to a new one (its key is "
            "returned once)",
            "user",
            {201: Response("Granted", TokenGrantResponse)},
            request=TokenGrantRequest,
        ),
    ],
    "api-collection-token": [
        Operation("delete", "Revoke a role from a token", "user", {204: Response("Revoked")})
    ],
    "api-collection-relations": [
        Operation(
            "get",
            "Relations from the workspace's collections (`source`, `target` as name@category, "
            "`type`); with both `source` and `type`, one page and an ETag",
            "user",
            {
                200: Response(
                    "A page", NumberedPage[CollectionRelationResponse], headers=ETAG_HEADER
                )
            },
            query={
                **PAGE_QUERY,
                "source": {"type": "string"},
                "target": {"type": "string"},
                "type": {"type": "string"},
            },
        )
    ],
    "api-collection-relation-set": [
        Operation(
            "put",
            "Replace the ordered targets of a source collection for one relation type"
            + IF_MATCH_NOTE,
            "user",
            {200: Response("The targets as stored", CollectionRelationSetResponse)},
            request=CollectionRelationSetRequest,
        )
    ],
    "api-task-configuration": [
        Operation(
            "get",
            "A task-configuration collection and its entries (without Debusine 0.16's entry "
            "keys unless the User-Agent names 0.16)",
            "user",
            {200: Response("`{collection: {id, name, data}, items: [...]}`", OBJECT)},
        ),
        Operation(
            "post",
            "Replace the entries of a task-configuration collection (or count the changes, "
            "with `dry_run`)",
            "user",
            {200: Response("What changed", TaskConfigurationPushResult)},
            request=TaskConfigurationPushRequest,
        ),
    ],
    "api-service-status": [
        Operation(
            "get",
            "Queue and worker counts",
            "any",
            {200: Response("The status", ServiceStatus)},
        )
    ],
    "api-open-metrics": [
        Operation(
            "get",
            "Metrics in the Prometheus text format, or OpenMetrics by `Accept` (a bearer token "
            "when DEBUSINE_METRICS_TOKEN is set)",
            "none",
            {200: Response("The metrics", TEXT)},
        )
    ],
}

#: `<converter:name>` in a Django route.
ROUTE_PARAMETER = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>[^>]+)>")
CONVERTER_SCHEMAS: dict[str, dict[str, Any]] = {
    "int": {"type": "integer", "minimum": 0},
    "str": {"type": "string", "pattern": "^[^/]+$"},
    "path": {"type": "string"},
    "slug": {"type": "string", "pattern": "^[-a-zA-Z0-9_]+$"},
}

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 7807 problem: every error of the API",
    "properties": {
        "title": {"type": "string"},
        "detail": {},
        "status": {"type": "integer"},
        "validation_errors": {"type": "object"},
    },
    "required": ["title", "detail", "status"],
}


def api_routes() -> list[tuple[str, str]]:
    """(name, OpenAPI path) of every named route under `/api/1.0/`, in URL-conf order."""
    from debusine.server.api import urls

    found: list[tuple[str, str]] = []

    def walk(patterns: list[Any], prefix: str) -> None:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(list(pattern.url_patterns), route)
            elif isinstance(pattern, URLPattern) and pattern.name:
                found.append((pattern.name, "/api/" + route))

    walk(list(urls.urlpatterns), "")
    return [(name, route) for name, route in found if route.startswith(f"/api/{API_VERSION}/")]


def openapi_path(route: str) -> tuple[str, list[dict[str, Any]]]:
    """A Django route as an OpenAPI path template, with its path parameters."""
    parameters = [
        {
            "name": match["name"],
            "in": "path",
            "required": True,
            "schema": CONVERTER_SCHEMAS[match["converter"] or "str"],
        }
        for match in ROUTE_PARAMETER.finditer(route)
    ]
    return ROUTE_PARAMETER.sub(lambda match: "{" + match["name"] + "}", route), parameters


def schema_name(model: type[BaseModel]) -> str:
    """The components key pydantic gives `model` (`NumberedPage[X]` -> `NumberedPage_X_`)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", model.__name__)


def collect_models() -> tuple[dict[str, Any], dict[type[BaseModel], str]]:
    """JSON schemas of every model used, under components, and the name of each."""
    models: list[type[BaseModel]] = []
    for operations in OPERATIONS.values():
        for operation in operations:
            bodies = [operation.request, *(r.body for r in operation.responses.values())]
            models.extend(body for body in bodies if isinstance(body, type) and body not in models)
    from debusine.protocol.work_requests import WorkRequestPage

    models.extend([WorkRequestPage, V016LookupSingleRequest, V016LookupMultipleRequest])
    models.append(V016LookupResponse)
    _keys, top = models_json_schema(
        [(model, "validation") for model in models],
        ref_template="#/components/schemas/{model}",
    )
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    return schemas, {model: schema_name(model) for model in models}


def body_schema(body: Body, names: dict[type[BaseModel], str]) -> dict[str, Any]:
    if isinstance(body, type):
        return {"$ref": f"#/components/schemas/{names[body]}"}
    if isinstance(body, dict):
        return body
    if body == OBJECT:
        return {"type": "object"}
    assert isinstance(body, str)
    return {"$ref": f"#/components/schemas/{body}"}


def operation_document(
    name: str, operation: Operation, names: dict[type[BaseModel], str]
) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status_code, response in sorted(operation.responses.items()):
        described: dict[str, Any] = {"description": response.description or "OK"}
        if response.body == TEXT:
            described["content"] = {"text/plain": {"schema": {"type": "string"}}}
        elif response.body not in (EMPTY, None):
            schema = body_schema(response.body, names)
            if response.many:
                schema = {"type": "array", "items": schema}
            media = (
                "application/problem+json" if response.body == "Problem" else "application/json"
            )
            described["content"] = {media: {"schema": schema}}
        if response.headers:
            described["headers"] = {
                header: {"description": text, "schema": {"type": "string"}}
                for header, text in response.headers.items()
            }
        responses[str(status_code)] = described
    for status_range, description in (("4XX", "Refused"), ("5XX", "Server error")):
        responses[status_range] = {
            "description": f"{description}: a problem document",
            "content": {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            },
        }
    document: dict[str, Any] = {
        "operationId": f"{name}-{operation.method}",
        "summary": operation.summary,
        "description": f"Authentication: {operation.auth}.",
        "responses": responses,
    }
    parameters = [
        {"name": key, "in": "query", "required": False, "schema": schema}
        for key, schema in operation.query.items()
    ] + [
        {"name": key, "in": "header", "required": False, "schema": schema}
        for key, schema in operation.headers.items()
    ]
    if parameters:
        document["parameters"] = parameters
    if operation.request == BYTES:
        document["requestBody"] = {
            "required": False,
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
        }
    elif operation.request is not None:
        document["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body_schema(operation.request, names)}},
        }
    if operation.auth == "none":
        document["security"] = [{}]
    elif operation.auth == "any":
        document["security"] = [{}, {"Token": []}]
    return document


def openapi_document() -> dict[str, Any]:
    """The OpenAPI description of API 1.0 as served by this server."""
    schemas, names = collect_models()
    schemas["Problem"] = PROBLEM_SCHEMA
    paths: dict[str, Any] = {}
    for name, route in api_routes():
        if name not in OPERATIONS:
            raise LookupError(f"API route {name} ({route}) has no OPERATIONS entry")
        template, parameters = openapi_path(route)
        item: dict[str, Any] = paths.setdefault(template, {})
        if parameters:
            item["parameters"] = parameters
        for operation in OPERATIONS[name]:
            item[operation.method] = operation_document(name, operation, names)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Debusine API",
            "version": API_VERSION,
            "description": "REST API 1.0 (protocol.md), as served by this server. Send the "
            "token in the `Token` header; `X-Debusine-Scope` chooses the scope.",
        },
        "servers": [{"url": "/"}],
        "components": {
            "schemas": schemas,
            "securitySchemes": {"Token": {"type": "apiKey", "in": "header", "name": "Token"}},
        },
        "security": [{"Token": []}],
        "paths": paths,
    }


@require_GET
def schema_view(request: HttpRequest) -> JsonResponse:
    """`GET /api/schema/`: the OpenAPI document (JSON)."""
    return JsonResponse(openapi_document(), json_dumps_params={"indent": 1})


urlpatterns: list[URLPattern] = [path("schema/", schema_view, name="api-schema")]
