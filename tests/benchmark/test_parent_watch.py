"""A benchmark pool worker exits when the benchmark process is killed (no orphan training)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")

# The "benchmark": starts a worker that arms the watcher, checks that the worker stays alive while
# its parent lives, prints the worker's pid and dies without cleaning up (like a SIGKILL).
PARENT = textwrap.dedent(
    """
    import os, subprocess, sys, time
    worker = subprocess.Popen(
        [sys.executable, "-c",
         "from medseg.benchmark.parent_watch import exit_when_parent_dies as w; w(0.05); "
         "print('armed', flush=True); import time; time.sleep(60)"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    assert worker.stdout.readline().strip() == "armed"
    time.sleep(0.5)
    print(worker.pid, worker.poll(), flush=True)
    os._exit(0)
    """
)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has exited; its new parent may not have reaped it yet


def test_worker_lives_with_its_parent_and_exits_when_the_parent_is_killed():
    out = subprocess.run(
        [sys.executable, "-c", PARENT], capture_output=True, text=True, timeout=60, check=True
    )
    pid_text, status_while_parent_alive = out.stdout.split()
    pid = int(pid_text)
    assert status_while_parent_alive == "None"  # still running 0.5 s after arming
    deadline = time.monotonic() + 20
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = _alive(pid)
    if alive:
        os.kill(pid, 9)
    assert not alive, "the worker outlived its parent"
