"""
The `debusine-worker` command line: options, logging set-up and exit statuses.

Exit statuses: 0 stopped by SIGTERM/SIGINT; 1 a completion could not be reported; 2 bad
command-line arguments; 3 unusable configuration or registration refused.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from debusine.worker.config import (
    LOG_LEVELS,
    ConfigError,
    WorkerConfig,
    check_secrets,
    default_config_dirs,
    find_config_dir,
    load_config,
)
from debusine.worker.daemon import WorkerDaemon, WorkerSetupError

EXIT_CONFIG_ERROR = 3

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def build_parser() -> argparse.ArgumentParser:
    searched = ", then ".join(str(path) for path in default_config_dirs())
    parser = argparse.ArgumentParser(
        prog="debusine-worker",
        description=(
            "Run a Debusine worker: register with the server named by api-url in config.ini, "
            "wait to be enabled, then run the work requests the server assigns."
        ),
        epilog=(
            "config.ini [General] keys: api-url (required), log-file, log-level, cache-dir, "
            "interruption-notice-url (an instance metadata URL answering 200 once the cloud "
            "will reclaim the instance: the worker then takes no new work and reports it), "
            "interruption-notice-interval (seconds, default 5). "
            "Exit status: 0 stopped by SIGTERM or SIGINT; 1 a completion could not be "
            "reported; 2 bad arguments; 3 unusable configuration or registration refused."
        ),
    )
    parser.add_argument(
        "--config-dir",
        type=Path,
        help=f"configuration directory (default: the first existing of {searched})",
    )
    parser.add_argument(
        "--log-file", type=Path, help="write the log to this file (default: log-file, else stderr)"
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        help="least severe level logged (default: log-level, else INFO)",
    )
    return parser


def setup_logging(config: WorkerConfig) -> None:
    handler: logging.Handler
    if config.log_file is not None:
        try:
            handler = logging.FileHandler(config.log_file, encoding="utf-8")
        except OSError as error:
            raise ConfigError(
                f"cannot open log file {config.log_file}: {error.strerror}"
            ) from None
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.log_level)
    # The daemon owns its process's logging: whatever configured the `debusine` loggers
    # before (the server's Django settings, when both run in one test process) gives way.
    package = logging.getLogger("debusine")
    package.handlers[:] = []
    package.propagate = True
    package.setLevel(logging.NOTSET)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        directory = find_config_dir(args.config_dir)
        config = load_config(directory, log_file=args.log_file, log_level=args.log_level)
        check_secrets(config)
        setup_logging(config)
    except ConfigError as error:
        print(f"debusine-worker: error: {error}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    logging.getLogger("debusine.worker").info(
        "starting with %s (server %s)", config.directory, config.api_url
    )
    try:
        return asyncio.run(WorkerDaemon(config).run())
    except (WorkerSetupError, ConfigError) as error:
        logging.getLogger("debusine.worker").error("%s", error)
        if config.log_file is not None:
            print(f"debusine-worker: error: {error}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
