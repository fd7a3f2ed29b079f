"""
The two dialects Debusine peers speak (protocol-versions.md): 0.11/0.12 and 0.16.

A peer's generation is read from what it sends: the HTTP method of get-next (POST in 0.16),
its `User-Agent` (`debusine/<version>` since 0.14.6; library defaults before), and a worker's
dynamic metadata (`provided_tags` and `system:worker_version` in 0.16; `<task>:version` keys
before). Here are those readings and the conversions between the dialects that the server
needs when it serves a 0.16 worker: its tag-based metadata seen as the keys the scheduler
matches on, and task data / dynamic task data in the 0.16 shape. No Django here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any


class Generation(StrEnum):
    """The dialect of a Debusine client or worker."""

    #: Debusine 0.11 and 0.12 (and our own client and worker).
    LEGACY = "0.11"
    #: Debusine 0.16 (and any `debusine/<version>` User-Agent from 0.14.6 on).
    V0_16 = "0.16"


_USER_AGENT = re.compile(r"^debusine(?:/(?P<version>[0-9][^ ]*))?(?: |$)")
#: The first version whose User-Agent names it (older ones send the library defaults).
FIRST_NAMED_VERSION = (0, 14, 6)


def version_tuple(version: str) -> tuple[int, ...]:
    """`0.16.2-1~bpo13+1` -> (0, 16, 2): the leading numeric parts of a Debian version."""
    numbers: list[int] = []
    for part in re.split(r"[.+~-]", version):
        if not part.isdigit():
            break
        numbers.append(int(part))
    return tuple(numbers)


def generation_from_user_agent(user_agent: str | None) -> Generation | None:
    """
    The generation a `User-Agent` names: 0.16 for `debusine/<version>` (or plain `debusine`),
    None for anything else (library defaults say nothing: our own client and 0.11/0.12 send them).
    """
    match = _USER_AGENT.match(user_agent or "")
    if match is None:
        return None
    version = match["version"]
    if version is None or version_tuple(version) >= FIRST_NAMED_VERSION:
        return Generation.V0_16
    return Generation.LEGACY


#: Key the server adds to a worker's dynamic metadata when the metadata itself shows no
#: generation but the User-Agent of the request that reported it does.
USER_AGENT_GENERATION_KEY = "server:generation_from_user_agent"


def generation_from_metadata(metadata: Mapping[str, Any]) -> Generation | None:
    """
    The generation a worker's metadata shows, or None when it shows none. The keys the worker
    reported decide; the User-Agent's reading (`with_user_agent_generation`) is recorded only
    when they say nothing, and then wins over `<task>:version` keys, which can only have come
    from an admin's static metadata.
    """
    if "provided_tags" in metadata or "system:worker_version" in metadata:
        return Generation.V0_16
    recorded = metadata.get(USER_AGENT_GENERATION_KEY)
    if recorded in {member.value for member in Generation}:
        return Generation(recorded)
    if "system:host_architecture" in metadata or any(key.endswith(":version") for key in metadata):
        return Generation.LEGACY
    return None


def with_user_agent_generation(
    metadata: Mapping[str, Any], user_agent: str | None
) -> dict[str, Any]:
    """
    Reported dynamic metadata, plus the generation its `User-Agent` names when the metadata
    shows none (a 0.16 worker whose metadata lacks its tags, say). A key of that name sent by
    the worker itself is dropped: only the server writes it.
    """
    data = {key: value for key, value in metadata.items() if key != USER_AGENT_GENERATION_KEY}
    if generation_from_metadata(data) is None:
        by_agent = generation_from_user_agent(user_agent)
        if by_agent is not None:
            data[USER_AGENT_GENERATION_KEY] = by_agent.value
    return data


# --- 0.16 metadata seen as the keys the scheduler matches on -------------------------------

_TASK_TAG = re.compile(r"^worker:task:(?P<type>[a-z]+):(?P<name>[^:]+):version:(?P<version>\d+)$")
#: `worker:cap:<tool>` -> the availability keys of 0.11/0.12 (and of our own worker).
_CAPABILITIES = {
    "sbuild": ("sbuild:available",),
    "autopkgtest": ("autopkgtest:available",),
    "mmdebstrap": ("mmdebstrap:available",),
    "simplesystemimagebuild": ("simplesystemimagebuild:available",),
    "debsign": ("signing:debsign:available",),
    "sbsign": ("signing:sign:available:uefi",),
    "lintian": ("lintian:available",),
    "piuparts": ("piuparts:available",),
}


def legacy_view_of_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """
    0.16 dynamic metadata with the 0.11/0.12 keys the scheduler reads added (from its tags):
    `<task>:version` (`signing:<task>:version` for signing tasks), `executor:<backend>:available`,
    tool availability, `system:host_architecture` and `system:architectures`. Metadata of
    another generation is returned unchanged (as a copy). Keys already present (an admin's
    static metadata, say) are kept.
    """
    view = dict(metadata)
    if generation_from_metadata(metadata) is not Generation.V0_16:
        return view
    tags = [tag for tag in metadata.get("provided_tags") or () if isinstance(tag, str)]
    derived: dict[str, Any] = {}
    architectures: list[str] = []
    for tag in tags:
        task = _TASK_TAG.match(tag)
        if task is not None:
            prefix = "" if task["type"] == "worker" else f"{task['type']}:"
            derived[f"{prefix}{task['name']}:version"] = int(task["version"])
        elif tag.startswith("worker:executor:"):
            derived[f"executor:{tag.removeprefix('worker:executor:')}:available"] = True
        elif tag.startswith("worker:cap:"):
            for key in _CAPABILITIES.get(tag.removeprefix("worker:cap:"), ()):
                derived[key] = True
        elif tag.startswith("worker:build-arch:"):
            architectures.append(tag.removeprefix("worker:build-arch:"))
    native = metadata.get("system:native_architecture")
    if isinstance(native, str):
        derived["system:host_architecture"] = native
    if architectures:
        derived["system:architectures"] = architectures
    for key, value in derived.items():
        view.setdefault(key, value)
    return view


# --- Task data and dynamic task data in the 0.16 shape --------------------------------------

#: Tasks whose 0.16 payload the server knows how to write, by task type. A 0.16 worker is
#: never given any other: its models reject unknown keys, so a guess fails `configure`.
V0_16_TASKS: dict[str, frozenset[str]] = {
    "Worker": frozenset({"noop", "sbuild", "lintian", "autopkgtest", "mmdebstrap", "piuparts"}),
    "Signing": frozenset({"noop"}),
}
#: Tasks whose dynamic data carries the resolved external repositories in 0.16.
_DYNAMIC_EXTRA_REPOSITORIES = frozenset({"sbuild", "autopkgtest", "piuparts"})


class CannotExpressError(Exception):
    """The payload has no equivalent in the worker's generation."""


def can_express(generation: Generation, task_type: str, task_name: str) -> bool:
    """Whether work requests of this task can be handed to a worker of `generation`."""
    if generation is Generation.LEGACY:
        return True
    return task_name in V0_16_TASKS.get(task_type, frozenset())


def _result_string(value: Any) -> str:
    if isinstance(value, bool):
        return "success" if value else "failure"
    if isinstance(value, str):
        return value
    raise CannotExpressError(f"noop result {value!r} has no 0.16 equivalent")


def task_data_for(
    generation: Generation, task_type: str, task_name: str, task_data: Mapping[str, Any]
) -> dict[str, Any]:
    """`task_data` (our shape, the 0.11/0.12 one) as a worker of `generation` accepts it."""
    data = dict(task_data)
    if generation is Generation.LEGACY:
        return data
    if not can_express(generation, task_type, task_name):
        raise CannotExpressError(f"{task_type} task {task_name!r} has no 0.16 payload")
    if "host_architecture" in data:
        architecture = data.pop("host_architecture")
        if architecture is not None:
            data["build_architecture"] = architecture
    if task_name == "noop" and "result" in data:
        data["result"] = _result_string(data["result"])
    return data


def dynamic_data_for(
    generation: Generation,
    task_name: str,
    task_data: Mapping[str, Any],
    dynamic_data: Mapping[str, Any] | None,
) -> dict[str, Any] | None:
    """`dynamic_task_data` as a worker of `generation` accepts it."""
    if dynamic_data is None or generation is Generation.LEGACY:
        return None if dynamic_data is None else dict(dynamic_data)
    data = {key: value for key, value in dynamic_data.items() if key != "task_configuration_id"}
    data.setdefault("task_input_fields", {})
    repositories = task_data.get("extra_repositories")
    if task_name in _DYNAMIC_EXTRA_REPOSITORIES and repositories:
        # 0.16 writes APT sources from the dynamic copy only.
        data.setdefault("extra_repositories", list(repositories))
    return data
