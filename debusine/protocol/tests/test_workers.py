"""The worker wire models: registration, completion reports and websocket frames."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from debusine.protocol.workers import (
    FRAME_WORK_REQUEST_AVAILABLE,
    WorkerFrame,
    WorkerRegisterRequest,
    WorkRequestCompletedRequest,
    event_frame,
)


def test_registration_defaults_to_an_external_worker() -> None:
    request = WorkerRegisterRequest.model_validate({"token": "a" * 64, "fqdn": "w.example"})

    assert request.worker_type == "external"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"token": "a" * 65}, "token"),
        ({"token": ""}, "token"),
        ({"worker_type": "cloud"}, "worker_type"),
        ({"name": "w"}, "name"),
    ],
)
def test_registration_is_strict(body: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        WorkerRegisterRequest.model_validate({"token": "a" * 64, "fqdn": "w", **body})


def test_a_debusine_worker_completion_report_is_accepted() -> None:
    report = WorkRequestCompletedRequest.model_validate(
        {
            "result": "error",
            "output_data": {
                "runtime_statistics": {"duration": 3, "cpu_time": 1},
                "errors": [{"message": "boom", "code": "execute-failed"}],
            },
        }
    )

    assert report.output_data is not None
    assert report.output_data.runtime_statistics is not None
    assert report.output_data.runtime_statistics.duration == 3
    # Unset statistics are left out again when the report is stored or forwarded.
    assert report.model_dump(exclude_unset=True)["output_data"]["runtime_statistics"] == {
        "duration": 3,
        "cpu_time": 1,
    }


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"result": "aborted"}, "result"),
        ({"result": "success", "output_data": {"logs": []}}, "logs"),
        (
            {"result": "success", "output_data": {"runtime_statistics": {"duration": "3"}}},
            "duration",
        ),
        (
            {
                "result": "success",
                "output_data": {"regression_analysis": {"t": {"status": "worse"}}},
            },
            "status",
        ),
    ],
)
def test_completion_reports_are_strict(body: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        WorkRequestCompletedRequest.model_validate(body)


def test_event_frames_carry_their_text_and_fields() -> None:
    frame = event_frame(FRAME_WORK_REQUEST_AVAILABLE, work_request_id=3)

    assert frame == {
        "type": "websocket.send",
        "text": "work_request_available",
        "work_request_id": 3,
    }
    assert WorkerFrame.model_validate(frame).work_request_id == 3


def test_worker_frames_keep_keys_they_do_not_know() -> None:
    frame = WorkerFrame.model_validate({"type": "connection_rejected", "reason": "x", "new": 1})

    assert frame.model_dump()["new"] == 1
