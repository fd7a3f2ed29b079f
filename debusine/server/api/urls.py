"""
URL configuration of the REST API: `/api/1.0/...`, one module per resource, and its OpenAPI
description at `/api/schema/`.
"""

from django.urls import include, path

from debusine.server.api import (
    artifacts,
    collections,
    lookups,
    monitoring,
    openapi,
    relations,
    task_configuration,
    uploads,
    whoami,
    work_requests,
    workers,
    workflows,
)

urlpatterns = [
    *openapi.urlpatterns,
    path(
        "1.0/",
        include(
            [
                *workers.urlpatterns,
                *work_requests.urlpatterns,
                *artifacts.urlpatterns,
                *uploads.urlpatterns,
                *relations.urlpatterns,
                *lookups.urlpatterns,
                *whoami.urlpatterns,
                *monitoring.urlpatterns,
                *workflows.urlpatterns,
                *collections.urlpatterns,
                *task_configuration.urlpatterns,
            ]
        ),
    ),
]
