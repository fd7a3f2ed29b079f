"""`debusine-signing generate_service_key PATH`: create a service key file (mode 0600)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from debusine.signing.management.commands._common import refused
from debusine.signing.service_keys import ServiceKeyError, generate_service_key


class Command(BaseCommand):
    help = (
        "Create a service key (Curve25519) in PATH, readable by its owner only. Software signing"
        " keys are sealed to the first key of DEBUSINE_SIGNING_SERVICE_KEYS."
    )
    requires_system_checks: list[str] = []
    requires_migrations_checks = False

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path, help="file to create; must not exist")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            key = generate_service_key(options["path"])
        except ServiceKeyError as exc:
            raise refused(str(exc)) from exc
        self.stdout.write(f"Created {key.path} (public key {key.public_key_b64})")
