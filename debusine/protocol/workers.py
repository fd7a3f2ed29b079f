"""
Wire models of the worker endpoints (protocol.md §1.3, §2.1, §3.1): registration, work request
completion, and the websocket frames the server sends to workers.

Request models forbid unknown keys, like Debusine's server; the worker daemon and the server
share these definitions.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

from debusine.protocol.wire import StrictRequest


class WorkerRegisterRequest(StrictRequest):
    """Body of `POST /1.0/worker/register/`."""

    #: The secret the worker generated for itself (64 hex characters for Debusine workers).
    token: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    fqdn: Annotated[StrictStr, Field(min_length=1, max_length=400)]
    worker_type: Literal["external", "signing", "celery"] = "external"


class RuntimeStatistics(StrictRequest):
    """What the worker measured while running a task (all optional integers)."""

    duration: StrictInt | None = None
    cpu_time: StrictInt | None = None
    disk_space: StrictInt | None = None
    memory: StrictInt | None = None
    available_disk_space: StrictInt | None = None
    available_memory: StrictInt | None = None
    cpu_count: StrictInt | None = None
    # Debusine 0.16 also reports these.
    duration_setup: StrictInt | StrictFloat | None = None
    duration_run: StrictInt | StrictFloat | None = None
    duration_teardown: StrictInt | StrictFloat | None = None
    network_received: StrictInt | None = None
    network_sent: StrictInt | None = None


class OutputDataError(StrictRequest):
    """One error the worker reports (e.g. code `configure-failed`)."""

    message: StrictStr
    code: StrictStr


class RegressionAnalysis(StrictRequest):
    """Comparison of a QA result with a reference run."""

    original_url: StrictStr | None = None
    new_url: StrictStr | None = None
    # Debusine 0.16 also names the compared versions and artifacts.
    original_source_version: StrictStr | None = None
    new_source_version: StrictStr | None = None
    original_artifact_id: StrictInt | None = None
    new_artifact_id: StrictInt | None = None
    status: Literal["no-result", "error", "improvement", "stable", "regression"]
    details: Any = None


class OutputData(StrictRequest):
    """`output_data` of a completion report."""

    runtime_statistics: RuntimeStatistics | None = None
    errors: list[OutputDataError] | None = None
    skip_reason: StrictStr | None = None
    regression_analysis: dict[str, RegressionAnalysis] | None = None
    #: Debusine 0.16: the answer to a confirmation step (server-side; accepted, not used).
    confirmation: dict[str, Any] | None = None


class WorkRequestCompletedRequest(StrictRequest):
    """Body of `PUT /1.0/work-request/{id}/completed/`."""

    TEMPORARY_FAILURE: ClassVar[str] = "temporary failure"

    #: `temporary failure` (Debusine 0.16): the task could not run for a passing reason; the
    #: server retries the work request.
    result: Literal["success", "failure", "error", "skipped", "temporary failure"]
    output_data: OutputData | None = None


# --- Websocket frames (server -> worker) -------------------------------------------------------

#: `text` of the event frames on the worker websocket.
FRAME_CONNECTED = "connected"
FRAME_REQUEST_DYNAMIC_METADATA = "request_dynamic_metadata"
FRAME_WORK_REQUEST_AVAILABLE = "work_request_available"
#: Our extension: the work request was aborted, stop running it and report nothing.
FRAME_WORK_REQUEST_ABORTED = "work_request_aborted"

#: `reason_code` of rejections and closures caused by a missing or disabled token.
REASON_TOKEN_DISABLED = "TOKEN_DISABLED"  # noqa: S105 (a reason code, not a secret)


class WorkerFrame(BaseModel):
    """A frame the server sends to a worker (unknown keys tolerated, as workers do)."""

    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None
    reason: str | None = None
    reason_code: str | None = None
    work_request_id: int | None = None


def event_frame(text: str, **fields: Any) -> dict[str, Any]:
    """An event frame: `{"type": "websocket.send", "text": <event>, ...}`."""
    return {"type": "websocket.send", "text": text, **fields}
