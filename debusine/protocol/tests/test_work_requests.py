"""
The work-request wire models: what our server sends, what our client and worker accept from
any compatible server (ours, Debusine 0.11 to 0.16), and the request bodies the server parses.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from debusine.protocol.work_requests import (
    PRIORITY_MAX,
    EventReactions,
    LenientWorkRequestPage,
    LenientWorkRequestResponse,
    TaskType,
    WorkRequestCompletedFrame,
    WorkRequestCreateRequest,
    WorkRequestPatchRequest,
    WorkRequestResponse,
    WorkRequestResult,
    WorkRequestStatus,
)


def our_work_request(**fields: Any) -> dict[str, Any]:
    """A WorkRequest object as our server serialises it (every field present)."""
    return {
        "id": 42,
        "url": "/debusine/System/work-request/42/",
        "task_name": "noop",
        "created_at": "2025-03-01T10:00:00.123456Z",
        "created_by": 1,
        "aborted_by": None,
        "started_at": "2025-03-01T10:00:01Z",
        "completed_at": "2025-03-01T10:00:03Z",
        "duration": 2.0,
        "worker": 3,
        "task_type": "Worker",
        "task_data": {"result": True},
        "dynamic_task_data": {},
        "output_data": {"runtime_statistics": {"duration": 2, "cpu_time": 0}},
        "priority_base": 0,
        "priority_adjustment": 5,
        "workflow_data": {},
        "event_reactions": {},
        "status": "completed",
        "result": "success",
        "artifacts": [7, 9],
        "scope": "debusine",
        "workspace": "System",
        **fields,
    }


def debusine_0_11_work_request() -> dict[str, Any]:
    """
    What a Debusine 0.11 server's get-next or show answers look like to a client: no `url`,
    none of our additions, and `duration` as an integer.
    """
    return {
        "id": 5,
        "created_at": "2025-03-01T10:00:00Z",
        "started_at": None,
        "completed_at": None,
        "duration": None,
        "status": "pending",
        "result": "",
        "worker": 2,
        "task_type": "Worker",
        "task_name": "noop",
        "task_data": {"result": True},
        "dynamic_task_data": None,
        "priority_base": 0,
        "priority_adjustment": 0,
        "artifacts": [],
        "workspace": "System",
    }


def test_our_work_request_round_trips_through_json() -> None:
    parsed = WorkRequestResponse.model_validate(our_work_request())

    again = WorkRequestResponse.model_validate_json(parsed.model_dump_json())

    assert again == parsed
    assert parsed.task_type is TaskType.WORKER
    assert parsed.status is WorkRequestStatus.COMPLETED
    assert parsed.result is WorkRequestResult.SUCCESS
    assert parsed.created_at == datetime(2025, 3, 1, 10, 0, 0, 123456, tzinfo=UTC)
    # The enums go out as their wire strings.
    assert parsed.model_dump(mode="json")["task_type"] == "Worker"


def test_our_server_must_send_every_field() -> None:
    answer = our_work_request()
    del answer["created_by"]

    with pytest.raises(ValidationError, match="created_by"):
        WorkRequestResponse.model_validate(answer)


def test_the_strict_model_refuses_what_debusine_0_11_sends() -> None:
    with pytest.raises(ValidationError, match="url"):
        WorkRequestResponse.model_validate(debusine_0_11_work_request())


def test_the_lenient_model_accepts_debusine_0_11_answers() -> None:
    parsed = LenientWorkRequestResponse.model_validate(debusine_0_11_work_request())

    assert parsed.url is None
    assert parsed.scope is None
    assert parsed.created_by is None
    assert parsed.workflow_data == {}
    assert parsed.dynamic_task_data is None
    assert parsed.status is WorkRequestStatus.PENDING
    assert parsed.result is WorkRequestResult.NONE


def test_the_lenient_model_ignores_keys_newer_servers_add() -> None:
    answer = {
        **debusine_0_11_work_request(),
        "links": {"webui_self": "/debusine/System/work-request/5/"},
        "parent": None,
        "workflow_root": None,
        "token": "secret",
    }

    parsed = LenientWorkRequestResponse.model_validate(answer)

    dumped = parsed.model_dump()
    # `links` is part of the WorkRequest object now (our server sends it too).
    assert dumped["links"] == {"webui_self": "/debusine/System/work-request/5/"}
    assert "token" not in dumped
    assert "workflow_root" not in dumped


def test_the_lenient_model_reads_our_answers_unchanged() -> None:
    strict = WorkRequestResponse.model_validate(our_work_request())

    lenient = LenientWorkRequestResponse.model_validate(our_work_request())

    assert lenient.model_dump() == strict.model_dump()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        # What Debusine's own client requires, ours does too.
        ("result", None),
        ("task_type", "Bogus"),
        ("status", "done"),
        ("task_data", None),
        ("artifacts", None),
    ],
)
def test_the_lenient_model_still_refuses_what_no_compatible_server_sends(
    key: str, value: Any
) -> None:
    with pytest.raises(ValidationError, match=key):
        LenientWorkRequestResponse.model_validate({**debusine_0_11_work_request(), key: value})


def test_a_work_request_without_workspace_is_refused_even_leniently() -> None:
    answer = debusine_0_11_work_request()
    del answer["workspace"]  # the worker uploads into it: it cannot do without

    with pytest.raises(ValidationError, match="workspace"):
        LenientWorkRequestResponse.model_validate(answer)


def test_a_lenient_page_without_links_is_the_last_one() -> None:
    page = LenientWorkRequestPage.model_validate({"results": [debusine_0_11_work_request()]})

    assert page.next is None
    assert page.previous is None
    assert [item.id for item in page.results] == [5]
    assert isinstance(page.results[0], LenientWorkRequestResponse)


def test_the_creation_request_refuses_unknown_keys() -> None:
    with pytest.raises(ValidationError, match="priority"):
        WorkRequestCreateRequest.model_validate(
            {"task_name": "noop", "task_data": {}, "priority": 3}
        )


def test_the_creation_request_does_not_coerce_the_task_name() -> None:
    with pytest.raises(ValidationError, match="task_name"):
        WorkRequestCreateRequest.model_validate({"task_name": 1, "task_data": {}})


def test_the_creation_request_leaves_optional_keys_to_the_server() -> None:
    request = WorkRequestCreateRequest.model_validate({"task_name": "noop", "task_data": {}})

    assert request.workspace is None
    assert request.event_reactions is None


@pytest.mark.parametrize("adjustment", [PRIORITY_MAX + 1, "3", 1.5])
def test_the_priority_patch_refuses_out_of_range_or_non_integers(adjustment: Any) -> None:
    with pytest.raises(ValidationError):
        WorkRequestPatchRequest.model_validate({"priority_adjustment": adjustment})


def test_the_priority_patch_may_change_nothing_else() -> None:
    with pytest.raises(ValidationError, match="task_data"):
        WorkRequestPatchRequest.model_validate({"priority_adjustment": 1, "task_data": {}})


def test_event_reactions_accept_notifications_and_list_actions_in_stage_order() -> None:
    reactions = EventReactions.model_validate(
        {
            "on_failure": [{"action": "send-notification", "channel": "admins"}],
            "on_creation": [{"action": "send-notification", "channel": "log", "data": {}}],
            "on_success": [
                {
                    "action": "update-collection-with-artifacts",
                    "collection": "bookworm@debian:environments",
                    "artifact_filters": {"category": "debian:system-tarball"},
                }
            ],
        }
    )

    assert [action.action for action in reactions.actions()] == [
        "send-notification",
        "update-collection-with-artifacts",
        "send-notification",
    ]
    assert reactions.on_creation[0].channel == "log"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("reactions", "error"),
    [
        ({"on_success": [{"action": "retry-with-delays"}]}, "action"),
        ({"on_success": [{"action": "send-notification"}]}, "channel"),
        ({"on_everything": []}, "on_everything"),
        (
            {
                "on_success": [
                    {
                        "action": "update-collection-with-artifacts",
                        "collection": 1,
                        "artifact_filters": {"name": "x"},
                    }
                ]
            },
            "unknown artifact filter 'name'",
        ),
    ],
)
def test_event_reactions_refuse_unknown_actions_stages_and_filters(
    reactions: dict[str, Any], error: str
) -> None:
    with pytest.raises(ValidationError, match=error):
        EventReactions.model_validate(reactions)


def test_the_completion_frame_parses_and_ignores_newer_keys() -> None:
    frame = WorkRequestCompletedFrame.model_validate(
        {
            "type": "websocket.send",
            "text": "work_request_completed",
            "work_request_id": 12,
            "completed_at": "2025-03-01T10:00:03Z",
            "result": "failure",
            "links": {},
        }
    )

    assert frame.work_request_id == 12
    assert frame.result is WorkRequestResult.FAILURE
    # What the on-completed command gets as its RESULT argument.
    assert str(frame.result) == "failure"
