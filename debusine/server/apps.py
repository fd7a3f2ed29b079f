"""Django application for server-wide pieces: management commands and system checks."""

from django.apps import AppConfig


class ServerConfig(AppConfig):
    """The `server` app: hosts debusine-admin commands and registers system checks."""

    name = "debusine.server"
    label = "server"
    verbose_name = "Debusine server"

    def ready(self) -> None:
        """Register the deployment checks run by `debusine-admin check`."""
        from debusine.server.project import checks  # noqa: F401
