"""Root URL configuration: the API under /api/, the web side everywhere else."""

from django.urls import include, path

urlpatterns = [
    path("api/", include("debusine.server.api.urls")),
    path("", include("debusine.server.web.urls")),
]
