"""
`python -m debusine.testing.guard PARENT TARGET SIGNAL`: send SIGNAL to TARGET when PARENT dies.

Some services detach from the process that starts them: `pg_ctl` daemonizes the embedded
PostgreSQL's postmaster, so Linux's parent-death signal cannot reach it. The stack starts this
small guard instead, as its own child with a parent-death SIGTERM (`terminate_with_parent`).
When the stack dies, even by SIGKILL, the guard gets SIGTERM and passes SIGNAL on to the
service; when the service stops first, the guard exits too. It imports only the standard
library and `debusine.testing.processes` (which does too): the guard costs a few MiB.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from types import FrameType

from debusine.testing.processes import process_is_alive

#: Seconds between checks that the target still runs.
POLL_INTERVAL = 1.0


def main(argv: list[str]) -> int:
    try:
        parent, target, signal_number = (int(value) for value in argv)
    except ValueError:
        print("usage: python -m debusine.testing.guard PARENT TARGET SIGNAL", file=sys.stderr)
        return 2

    def stop_target(_signum: int = 0, _frame: FrameType | None = None) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(target, signal_number)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop_target)
    # The parent may have died between our fork and its parent-death request.
    if os.getppid() != parent:
        stop_target()
    while process_is_alive(target):
        time.sleep(POLL_INTERVAL)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
