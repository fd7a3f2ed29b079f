"""
Server processes that die with the process that started them.

Gunicorn forks its uvicorn workers and Celery forks its pool processes. If the master is killed
outright (SIGKILL, the OOM killer, a supervisor that signals only the main PID), nothing tells
its children: uvicorn workers would keep answering on the port and a new server could not bind
it. Linux can signal a process when its parent dies (`prctl(PR_SET_PDEATHSIG)`); each forked
server process asks for SIGTERM, its normal "stop gracefully" signal.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

#: prctl(2) option from <sys/prctl.h>.
PR_SET_PDEATHSIG = 1


def stop_when_parent_dies(expected_parent: int, sig: int = signal.SIGTERM) -> None:
    """
    Ask Linux to send `sig` to this process when its parent dies.

    `expected_parent` is the PID of the parent that forked us: if it already died before we
    asked (the signal would then never come), `sig` is sent to ourselves at once. Call this
    after any change of user or group (which clears the setting).
    """
    if sys.platform != "linux":
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != expected_parent:
        os.kill(os.getpid(), sig)
