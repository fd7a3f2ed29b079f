"""Root URL configuration: the API under /api/, the web side everywhere else."""

from django.urls import include, path

urlpatterns = [
    path("api/", include("debusine.server.api.urls")),
    path("", include("debusine.server.web.urls")),
]

# Problem+json under /api/, Django's pages elsewhere.
handler400 = "debusine.server.api.errors.bad_request"
handler403 = "debusine.server.api.errors.permission_denied"
handler404 = "debusine.server.api.errors.page_not_found"
handler500 = "debusine.server.api.errors.server_error"
