"""Workflow templates: named, pre-set parameters for a workflow in a workspace."""

from __future__ import annotations

from django.db import models


class WorkflowTemplate(models.Model):
    """Fixed parameters (that users cannot override) and a base priority for a workflow."""

    name = models.CharField(max_length=255)
    workspace = models.ForeignKey(
        "db.Workspace", on_delete=models.PROTECT, related_name="workflow_templates"
    )
    task_name = models.CharField(max_length=100)
    task_data = models.JSONField(default=dict, blank=True)
    priority = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "name"], name="db_workflowtemplate_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.task_name})"
