"""
The interface every provider implements: launch an instance, terminate one, list those running.

The provisioner decides; a provider only does what it is told and reports what it sees. Each
instance carries the pool's name as a tag (a cloud tag, a label, or an environment variable
of a local process), so that instances the database lost track of can be found and swept.
No Django here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

#: The tag (or label) naming an instance's pool, and the one naming its worker.
POOL_TAG = "debusine-worker-pool"
WORKER_TAG = "debusine-worker"


class ProviderError(Exception):
    """The provider refused or failed; the message says why (one line)."""


class CapacityError(ProviderError):
    """No capacity for any of the specification's choices now: retry later."""


@dataclass(frozen=True)
class LaunchRequest:
    """What one launch needs: who the worker is and how it reaches the server."""

    pool_name: str
    worker_name: str
    activation_token: str
    #: Extra tags/labels the pool asks for.
    tags: dict[str, str] = field(default_factory=dict)
    #: Launch on on-demand capacity, not spot (a replacement after a spot interruption).
    on_demand: bool = False


@dataclass(frozen=True)
class LaunchedInstance:
    """A launched instance: its id at the provider and whatever else is worth keeping."""

    instance_id: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunningInstance:
    """An instance the provider reports for a pool's tag."""

    instance_id: str
    worker_name: str | None
    #: The provider announced it will reclaim the instance (spot interruption notice).
    interruption_notice: bool = False


class Provider(Protocol):
    """One cloud (or this machine)."""

    def launch(self, request: LaunchRequest) -> LaunchedInstance:
        """Start an instance; raise CapacityError or ProviderError."""

    def terminate(self, instance_id: str) -> None:
        """Stop the instance for good; an instance already gone is not an error."""

    def list_running(self, pool_name: str) -> list[RunningInstance]:
        """Every instance carrying the pool's tag, whether or not the database knows it."""


def user_data(
    *,
    api_url: str,
    activation_token: str,
    install_source: str,
    debian_release: str,
    repository_url: str | None,
    interruption_notice_url: str | None = None,
) -> str:
    """
    The cloud-init user data of a cloud worker: it writes `config.ini` and the activation
    token, installs debusine-worker (unless the image has it), and starts it.
    """
    lines = [
        "#cloud-config",
        "write_files:",
        "  - path: /etc/debusine/worker/config.ini",
        "    permissions: '0644'",
        "    content: |",
        "      [General]",
        f"      api-url = {api_url}",
        *(
            [f"      interruption-notice-url = {interruption_notice_url}"]
            if interruption_notice_url
            else []
        ),
        "  - path: /etc/debusine/worker/activation-token",
        "    permissions: '0600'",
        "    owner: root:root",
        "    content: |",
        f"      {activation_token}",
        "runcmd:",
    ]
    if install_source != "pre-installed":
        if install_source == "backports":
            suite = f"{debian_release}-backports"
            lines.append(
                f"  - [sh, -c, 'echo deb http://deb.debian.org/debian {suite} main "
                "> /etc/apt/sources.list.d/backports.list']"
            )
        elif install_source == "daily-builds" and repository_url:
            lines.append(
                f"  - [sh, -c, 'echo deb [trusted=yes] {repository_url} {debian_release} main "
                "> /etc/apt/sources.list.d/debusine.list']"
            )
        lines.append("  - [apt-get, update]")
        lines.append("  - [apt-get, install, -y, debusine-worker]")
    lines.append(
        "  - [sh, -c, 'chown -R debusine-worker: /etc/debusine/worker && "
        "systemctl restart debusine-worker']"
    )
    return "\n".join(lines) + "\n"
