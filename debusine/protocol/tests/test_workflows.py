"""The workflow wire models our client uses against Debusine servers."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from debusine.protocol.workflows import (
    LenientWorkflowTemplateResponse,
    WorkflowCreateRequest,
    WorkflowTemplateCreateRequest,
)


def test_a_debusine_0_11_template_answer_has_no_url_or_name() -> None:
    template = LenientWorkflowTemplateResponse.model_validate(
        {"id": 1, "task_name": "noop", "workspace": "System", "task_data": {}, "priority": 0}
    )

    assert (template.url, template.name) == (None, None)


def test_template_answers_ignore_newer_keys() -> None:
    template = LenientWorkflowTemplateResponse.model_validate(
        {
            "id": 1,
            "url": "/debusine/System/workflow-template/t/",
            "name": "t",
            "task_name": "noop",
            "workspace": "System",
            "task_data": {},
            "priority": 0,
            "links": {},
        }
    )

    assert template.name == "t"
    assert "links" not in template.model_dump()


def test_template_requests_are_strict() -> None:
    with pytest.raises(ValidationError, match="static_parameters"):
        WorkflowTemplateCreateRequest.model_validate(
            {"name": "t", "task_name": "noop", "task_data": {}, "static_parameters": {}}
        )


def test_a_workflow_may_start_without_task_data() -> None:
    assert WorkflowCreateRequest.model_validate({"template_name": "t"}).task_data == {}
