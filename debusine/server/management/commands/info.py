"""`debusine-admin info`: what an operator needs to set up the web server and the clients."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.core.management.base import CommandParser

from debusine.server.management.base import AdminCommand, add_yaml_option

#: Host names served over plain HTTP in development: everything else is behind HTTPS.
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")


def redacted(url: str) -> str:
    """`url` with any password replaced by `***`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def api_url() -> str:
    """The `api-url` to put in client and worker configuration."""
    fqdn = settings.DEBUSINE_FQDN
    scheme = "http" if fqdn in LOCAL_HOSTS else "https"
    return f"{scheme}://{fqdn}/api"


def instance_info() -> dict[str, Any]:
    database = settings.DATABASES["default"]
    return {
        "data_dir": str(settings.DEBUSINE_DATA_DIR),
        "database": {
            "host": database["HOST"] or "(local socket)",
            "port": database["PORT"] or "5432",
            "name": database["NAME"],
            "user": database["USER"] or "(current user)",
        },
        "redis_url": redacted(settings.DEBUSINE_REDIS_URL),
        "store_directory": str(settings.DEBUSINE_STORE_DIRECTORY),
        "upload_directory": str(settings.DEBUSINE_UPLOAD_DIRECTORY),
        "static_root": str(settings.STATIC_ROOT),
        "default_scope": settings.DEBUSINE_DEFAULT_SCOPE,
        "default_workspace": settings.DEBUSINE_DEFAULT_WORKSPACE,
        "fqdn": settings.DEBUSINE_FQDN,
        "allowed_hosts": list(dict.fromkeys(settings.ALLOWED_HOSTS)),
        "api_url": api_url(),
    }


class Command(AdminCommand):
    help = (
        "Print the configuration needed to set up the web server and clients: directories, "
        "database and Redis (without passwords), default scope, allowed hosts, API URL."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_yaml_option(parser)

    def run(self, *, yaml: bool, **_: Any) -> None:
        info = instance_info()
        if yaml:
            self.write_yaml(info)
            return
        database = info["database"]
        lines = [
            ("Data directory", info["data_dir"]),
            (
                "Database",
                f"{database['name']} on {database['host']}:{database['port']}"
                f" as {database['user']}",
            ),
            ("Redis", info["redis_url"]),
            ("Store directory", info["store_directory"]),
            ("Upload directory", info["upload_directory"]),
            ("Static files (serve at /static/)", info["static_root"]),
            ("Default scope", info["default_scope"]),
            ("Default workspace", info["default_workspace"]),
            ("Server name (DEBUSINE_FQDN)", info["fqdn"]),
            ("Allowed hosts", ", ".join(info["allowed_hosts"])),
            ("API URL for clients and workers", info["api_url"]),
        ]
        width = max(len(label) for label, _ in lines)
        for label, value in lines:
            self.write(f"{label + ':':<{width + 1}} {value}")
