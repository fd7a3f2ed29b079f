"""
The `[Service]` settings of our systemd units that matter to run them without systemd.

The packages' test has no systemd in its Debian root: it starts each unit's `ExecStart` line
itself, as the unit's `User=`, with its `Environment=`, `UMask=` and the directories systemd
would have made (`RuntimeDirectory=`, `StateDirectory=`, `LogsDirectory=`).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Service:
    """What one unit's [Service] section says about how to start its process."""

    name: str
    exec_start: list[str]
    user: str = "root"
    type: str = "simple"
    umask: str = "0022"
    environment: dict[str, str] = field(default_factory=dict)
    runtime_directories: list[str] = field(default_factory=list)
    state_directories: list[str] = field(default_factory=list)
    logs_directories: list[str] = field(default_factory=list)
    settings: dict[str, list[str]] = field(default_factory=dict)


def unit_lines(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of every assignment, continuation lines joined."""
    assignments = []
    section = ""
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if pending:
            line = pending + " " + line
            pending = ""
        if not line or line.startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            pending = line[:-1].rstrip()
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        assignments.append((section, key.strip(), value.strip()))
    return assignments


def unescape(word: str) -> str:
    """Undo systemd's specifier escape (`%%` is a literal `%`)."""
    return word.replace("%%", "%")


def parse_service(path: Path) -> Service:
    """The [Service] of the unit at `path`."""
    values: dict[str, list[str]] = {}
    for section, key, value in unit_lines(path.read_text()):
        if section == "Service":
            values.setdefault(key, []).append(value)
    (exec_start,) = values["ExecStart"]
    environment: dict[str, str] = {}
    for assignment in values.get("Environment", []):
        for word in shlex.split(assignment):
            name, _, value = word.partition("=")
            environment[name] = value
    return Service(
        name=path.name,
        exec_start=[unescape(word) for word in shlex.split(exec_start)],
        user=values.get("User", ["root"])[-1],
        type=values.get("Type", ["simple"])[-1],
        umask=values.get("UMask", ["0022"])[-1],
        environment=environment,
        runtime_directories=" ".join(values.get("RuntimeDirectory", [])).split(),
        state_directories=" ".join(values.get("StateDirectory", [])).split(),
        logs_directories=" ".join(values.get("LogsDirectory", [])).split(),
        settings=values,
    )


#: Exec the rest of the command line with only standard input, output and error open, as
#: systemd starts a service (a hook's shell inherits descriptors of its own, e.g. mmdebstrap's
#: connected socket, which the server's fork-safety check rightly refuses).
CLOSE_INHERITED_FDS = "/usr/bin/python3 -c " + shlex.quote(
    "import os, sys; os.closerange(3, 65536); os.execvp(sys.argv[1], sys.argv[1:])"
)


def start_script(service: Service, log: str, *, background: bool) -> str:
    """Shell lines (run as root in the Debian root) that start `service` as systemd would."""
    lines = []
    for base, kind, directories in (
        ("/run", "Runtime", service.runtime_directories),
        ("/var/lib", "State", service.state_directories),
        ("/var/log", "Logs", service.logs_directories),
    ):
        mode = service.settings.get(f"{kind}DirectoryMode", ["0755"])[-1]
        for directory in directories:
            path = shlex.quote(f"{base}/{directory}")
            # As systemd does: made when missing, then owned by the user, with the mode.
            lines.append(f"mkdir -p {path}")
            lines.append(f"chown {service.user}:{service.user} {path}")
            lines.append(f"chmod {mode} {path}")
    environment = " ".join(
        shlex.quote(f"{name}={value}") for name, value in service.environment.items()
    )
    command = " ".join(shlex.quote(word) for word in service.exec_start)
    run = (
        f"(umask {service.umask}; exec {CLOSE_INHERITED_FDS} runuser -u {service.user} -- "
        f"env {environment} {command}) >>{shlex.quote(log)} 2>&1 </dev/null"
    )
    if background:
        lines.append(f"setsid sh -c {shlex.quote(run)} &")
        lines.append(f"echo $! >/root/pids/{service.name}")
    else:
        lines.append(run)
    return "\n".join(lines)
