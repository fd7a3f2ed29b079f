"""Workflow templates: named, pre-set parameters for a workflow in a workspace."""

from __future__ import annotations

from typing import Any

from django.db import models


def runtime_parameters_any() -> Any:
    return "any"


class WorkflowTemplate(models.Model):
    """Fixed parameters (that users cannot override) and a base priority for a workflow."""

    name = models.CharField(max_length=255)
    workspace = models.ForeignKey(
        "db.Workspace", on_delete=models.PROTECT, related_name="workflow_templates"
    )
    task_name = models.CharField(max_length=100)
    task_data = models.JSONField(default=dict, blank=True)
    priority = models.IntegerField(default=0)
    #: What users may set when they start it (Debusine 0.16): "any", or a mapping of parameter
    #: name to its allowed values (a list) or "any". Templates made through the 0.11/0.12 API
    #: keep those versions' rule: users set anything, the template's `task_data` wins.
    runtime_parameters = models.JSONField(default=runtime_parameters_any, blank=True)
    #: Only workspace owners and members of `extra_groups` may start a restricted template.
    restricted = models.BooleanField(default=False)
    extra_groups = models.ManyToManyField("db.Group", blank=True, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "name"], name="db_workflowtemplate_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.task_name})"
