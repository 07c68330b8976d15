"""Fault points for the crash-safety battery.

``STAGE2_FAULT=<point>`` makes the process kill itself (SIGKILL: no cleanup, no finally) when it
reaches that point, so tests can prove that a crash at each stage leaves the stores consistent.
Unset, a fault point is a dictionary lookup and nothing else.
"""

import os
import signal

POINTS = ("refresh_insert", "gx_validation", "training", "version_write", "pointer_swap")


def fault_point(name: str) -> None:
    if os.environ.get("STAGE2_FAULT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
