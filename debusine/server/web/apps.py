"""The web UI as a Django app, so that its templates are found (APP_DIRS)."""

from django.apps import AppConfig


class WebConfig(AppConfig):
    name = "debusine.server.web"
    label = "web"
    verbose_name = "Debusine web UI"
