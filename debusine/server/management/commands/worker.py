"""
`debusine-admin worker`: pre-create, enable, disable, pause, resume and list workers; edit their
metadata.
"""

from __future__ import annotations

import argparse
from typing import Any

from django.contrib.postgres.aggregates import ArrayAgg
from django.core.management.base import CommandParser
from django.db.models import Q, Value

from debusine.server.db.models import Worker, WorkerType
from debusine.server.management.base import (
    NounCommand,
    add_yaml_option,
    dump_yaml,
    fail,
    get_worker,
    read_json_mapping,
)
from debusine.server.work_requests import transitions
from debusine.server.work_requests.transitions import WorkRequestError

#: The worker types an administrator manages (Celery workers are internal).
ADMIN_WORKER_TYPES = [WorkerType.EXTERNAL.value, WorkerType.SIGNING.value]

#: Metadata keys worth a glance in the table (the YAML output has everything).
SUMMARY_KEYS = ("system:host_architecture", "system:cpu_count")


def metadata_summary(worker: Worker) -> str:
    metadata = worker.metadata()
    parts = [f"{key.split(':')[-1]}={metadata[key]}" for key in SUMMARY_KEYS if key in metadata]
    parts.append(f"{len(worker.static_metadata)} static/{len(worker.dynamic_metadata)} dynamic")
    return " ".join(parts)


class Command(NounCommand):
    help = "Manage workers: create, enable, disable, pause, resume, list, edit_metadata."

    def add_verbs(self, verbs: argparse._SubParsersAction[CommandParser]) -> None:
        create = self.add_verb(
            verbs,
            "create",
            "Pre-create a worker and print its activation token: valid for 15 minutes, it "
            "lets the worker register already enabled.",
        )
        create.add_argument("fqdn", metavar="FQDN", help="host name the worker is named after")
        self._add_worker_type(create)

        for verb, help_text in (
            ("enable", "Enable a worker: it is accepted on its next connection attempt."),
            (
                "disable",
                "Disable a worker: its token stops working and its pending work requests go "
                "back to the queue.",
            ),
            (
                "pause",
                "Pause a worker: it takes no new work and finishes what it holds (not for pool "
                "workers, which the provisioner drains).",
            ),
            ("resume", "Resume a paused worker: it takes new work again."),
        ):
            parser = self.add_verb(verbs, verb, help_text)
            parser.add_argument(
                "worker", metavar="NAME-OR-TOKEN-KEY", help="worker name or its token key"
            )
            self._add_worker_type(parser)

        listing = self.add_verb(verbs, "list", "List workers.")
        add_yaml_option(listing)

        metadata = self.add_verb(
            verbs,
            "edit_metadata",
            "Print a worker's static metadata as YAML, or replace it (--set). Static metadata "
            "overrides what the worker reports.",
        )
        metadata.add_argument("worker", metavar="NAME")
        metadata.add_argument(
            "--set",
            dest="source",
            metavar="FILE",
            help="read the new static metadata (a YAML mapping) from FILE, or stdin for '-'",
        )

    @staticmethod
    def _add_worker_type(parser: CommandParser) -> None:
        parser.add_argument(
            "--worker-type",
            choices=ADMIN_WORKER_TYPES,
            default=WorkerType.EXTERNAL.value,
            help="default: external",
        )

    def verb_create(self, *, fqdn: str, worker_type: str, **_: Any) -> None:
        _worker, key = Worker.objects.create_with_activation_token(fqdn, worker_type)
        self.write(key)

    def verb_enable(self, *, worker: str, worker_type: str, **_: Any) -> None:
        target = get_worker(worker, worker_type)
        transitions.worker_enabled(target)
        self.write(f"Enabled worker {target.name}")

    def verb_disable(self, *, worker: str, worker_type: str, **_: Any) -> None:
        target = get_worker(worker, worker_type)
        transitions.worker_disabled(target)
        self.write(f"Disabled worker {target.name}")

    def verb_pause(self, *, worker: str, worker_type: str, **_: Any) -> None:
        target = get_worker(worker, worker_type)
        try:
            transitions.worker_paused(target)
        except WorkRequestError as error:
            fail(str(error))
        self.write(f"Paused worker {target.name}")

    def verb_resume(self, *, worker: str, worker_type: str, **_: Any) -> None:
        target = get_worker(worker, worker_type)
        try:
            transitions.worker_resumed(target)
        except WorkRequestError as error:
            fail(str(error))
        self.write(f"Resumed worker {target.name}")

    def verb_list(self, *, yaml: bool, **_: Any) -> None:
        workers = list(
            Worker.objects.select_related("token")
            .annotate(
                # What the worker holds: its running and assigned (not yet fetched) work.
                work_request_ids=ArrayAgg(
                    "assigned_work_requests",
                    filter=Q(assigned_work_requests__status__in=transitions.HELD),
                    order_by="assigned_work_requests",
                    default=Value([]),
                )
            )
            .order_by("name")
        )
        if yaml:
            self.write_yaml(
                [
                    {
                        "name": worker.name,
                        "worker_type": worker.worker_type,
                        "enabled": worker.is_enabled(),
                        "connected_at": worker.connected_at,
                        # The lease: renewed while connected and by every API call.
                        "last_seen_at": worker.token.last_seen_at if worker.token else None,
                        "registered_at": worker.registered_at,
                        "concurrency": worker.concurrency,
                        "work_requests": worker.work_request_ids,
                        "static_metadata": worker.static_metadata,
                        "dynamic_metadata": worker.dynamic_metadata,
                        "dynamic_metadata_updated_at": worker.dynamic_metadata_updated_at,
                    }
                    for worker in workers
                ]
            )
            return
        self.write_table(
            ["NAME", "TYPE", "ENABLED", "CONNECTED", "REGISTERED", "WORK", "METADATA"],
            [
                [
                    worker.name,
                    worker.worker_type,
                    worker.is_enabled(),
                    worker.connected_at,
                    worker.registered_at,
                    ",".join(map(str, worker.work_request_ids)) or "-",
                    metadata_summary(worker),
                ]
                for worker in workers
            ],
        )

    def verb_edit_metadata(self, *, worker: str, source: str | None, **_: Any) -> None:
        target = get_worker(worker)
        if source is None:
            self.stdout.write(dump_yaml(target.static_metadata), ending="")
            return
        transitions.worker_metadata_changed(target, static=read_json_mapping(source, self.stdin))
        self.write(f"Updated the static metadata of worker {target.name}")
