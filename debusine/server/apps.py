"""Django application for server-wide pieces: management commands, system checks, wiring."""

from django.apps import AppConfig


class ServerConfig(AppConfig):
    """The `server` app: hosts debusine-admin commands and registers system checks."""

    name = "debusine.server"
    label = "server"
    verbose_name = "Debusine server"

    def ready(self) -> None:
        """
        Register the deployment checks run by `debusine-admin check`, and the hooks of the
        scheduler and of the workflow engine for the work request's transitions
        (`debusine.server.work_requests.effects`).
        """
        from debusine.server.project import checks  # noqa: F401
        from debusine.server.scheduler import triggers
        from debusine.server.workflows_queue import jobs as workflow_jobs

        triggers.install()
        workflow_jobs.install()
