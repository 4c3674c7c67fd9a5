"""End a pool worker when the process that started it is gone.

``medseg benchmark --workers N`` trains cells in spawned processes. Ctrl-C reaches the whole
process group, but a ``kill`` of the benchmark alone (a scheduler, a timeout, ``pkill``) would
leave its workers training their cells for minutes, holding the CPU and writing into a run that
nobody waits for. A daemon thread in each worker polls the parent's pid and exits the worker when
the worker has been re-parented (its parent died). Polling works on every POSIX system; Windows
workers are not re-parented, and the pool's broken pipe ends them at their next result.
"""

from __future__ import annotations

import os
import threading
import time

EXIT_CODE = 70  # EX_SOFTWARE: the worker did not finish its cell


def _watch(parent: int, interval: float) -> None:
    while True:
        time.sleep(interval)
        if os.getppid() != parent:
            os._exit(EXIT_CODE)  # no cleanup: the cell's unfinished folder is restarted on resume


def exit_when_parent_dies(interval: float = 1.0) -> threading.Thread | None:
    """Start the watcher thread (a no-op on Windows); returns it, or ``None`` when not started."""
    if os.name != "posix":
        return None
    thread = threading.Thread(
        target=_watch, args=(os.getppid(), interval), name="medseg-parent-watch", daemon=True
    )
    thread.start()
    return thread


__all__ = ["EXIT_CODE", "exit_when_parent_dies"]
