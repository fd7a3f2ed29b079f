"""`debusine-admin provisioner run`: provisioner passes in the foreground (or one, `--once`)."""

from __future__ import annotations

import argparse
import time
from typing import Any

from django.conf import settings
from django.core.management.base import CommandParser

from debusine.server.management.base import NounCommand, fail
from debusine.server.worker_pools.provisioner import run_provisioner_pass


class Command(NounCommand):
    help = (
        "Scale the dynamic worker pools in the foreground: `run` does a provisioner pass every "
        "DEBUSINE_PROVISIONER_INTERVAL seconds until stopped, printing every decision. Any "
        "number may run (beside the Celery `provisioner` queue too): passes never overlap."
    )
    # Each launch and termination commits on its own (a worker registers while others boot).
    verbs_without_command_transaction = frozenset({"run"})

    def add_verbs(self, verbs: argparse._SubParsersAction[CommandParser]) -> None:
        run = self.add_verb(
            verbs, "run", "Run provisioner passes until stopped (SIGTERM, Ctrl-C), or one."
        )
        run.add_argument("--once", action="store_true", help="run one pass and exit")
        run.add_argument(
            "--interval",
            type=float,
            default=None,
            help="seconds between passes (default: DEBUSINE_PROVISIONER_INTERVAL)",
        )

    def verb_run(self, *, once: bool, interval: float | None, **_: Any) -> None:
        pause = interval if interval is not None else float(settings.DEBUSINE_PROVISIONER_INTERVAL)
        if pause <= 0:
            fail("--interval must be positive")
        while True:
            report = run_provisioner_pass()
            for line in report.lines():
                self.write(line)
            self.stdout.flush()
            if once:
                return
            time.sleep(pause)
