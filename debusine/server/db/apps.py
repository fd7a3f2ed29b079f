"""Django application holding every model of the server."""

from django.apps import AppConfig


class DbConfig(AppConfig):
    """The `db` app: all persistent metadata lives in its models."""

    name = "debusine.server.db"
    label = "db"
    verbose_name = "Debusine database"
    default_auto_field = "django.db.models.BigAutoField"
