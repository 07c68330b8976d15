"""Is the process that started something still alive? Used to clean up after a killed writer."""

import os
import socket


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def this_host() -> str:
    return socket.gethostname()
