"""`debusine-signing signing_worker`: run the signing worker daemon."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from debusine.signing.key_store import configured_service_keys
from debusine.signing.management.commands._common import refused
from debusine.signing.service_keys import ServiceKeyError
from debusine.signing.worker import SigningWorkerDaemon, check_server_url, default_config_dir
from debusine.worker.cli import setup_logging
from debusine.worker.config import LOG_LEVELS, ConfigError, check_secrets, load_config
from debusine.worker.daemon import WorkerSetupError

#: As debusine-worker: unusable configuration or registration refused.
EXIT_CONFIG_ERROR = 3


class Command(BaseCommand):
    help = (
        "Run the signing worker: register with the server of config.ini's api-url (HTTPS, or a"
        " loopback address) as a worker of type signing, then run the Signing work requests it"
        " is assigned with the keys of this database. Exit status: 0 stopped by SIGTERM or"
        " SIGINT; 1 a completion could not be reported; 3 unusable configuration."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--config-dir",
            type=Path,
            default=default_config_dir(),
            help="directory of config.ini, token and activation-token (default: %(default)s)",
        )
        parser.add_argument("--log-file", type=Path, help="write the log to this file")
        parser.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            service_keys = configured_service_keys()
            worker_config = load_config(
                options["config_dir"],
                log_file=options["log_file"],
                log_level=options["log_level"],
            )
            check_server_url(worker_config.api_url)
            check_secrets(worker_config)
            setup_logging(worker_config)
        except (ServiceKeyError, ConfigError) as error:
            raise refused(str(error)) from error
        daemon = SigningWorkerDaemon(worker_config, service_keys)
        try:
            code = asyncio.run(daemon.run())
        except (WorkerSetupError, ConfigError) as error:
            raise refused(str(error)) from error
        if code:
            raise SystemExit(code)
