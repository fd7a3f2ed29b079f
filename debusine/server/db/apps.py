"""Django application holding every model of the server."""

from django.apps import AppConfig


class DbConfig(AppConfig):
    """The `db` app: all persistent metadata lives in its models."""

    name = "debusine.server.db"
    label = "db"
    verbose_name = "Debusine database"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Make sure the default rows exist after every migrate (and test flush)."""
        from django.db.models.signals import post_migrate

        from debusine.server.db.defaults import create_default_rows_after_migrate

        post_migrate.connect(create_default_rows_after_migrate, sender=self)
