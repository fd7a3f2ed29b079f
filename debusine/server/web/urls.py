"""URL configuration of the web side: pages and artifact downloads."""

from django.urls import URLPattern, path

from debusine.server.web import downloads

urlpatterns: list[URLPattern] = [
    path(
        "<str:scope>/<str:workspace>/artifact/<int:artifact_id>/download/",
        downloads.download_artifact,
        name="artifact-download",
    ),
    path(
        "<str:scope>/<str:workspace>/artifact/<int:artifact_id>/download/<path:path>",
        downloads.download_artifact_file,
        name="artifact-file-download",
    ),
]
