"""Claiming a training run's output folder.

One training writes into a run folder at a time: ``OUT/.lock`` is held with ``fcntl.flock``
for the whole run (the kernel releases it when the process exits, even on SIGKILL), so a
second ``medseg train --out OUT`` fails at once instead of interleaving checkpoints. A folder
that already holds a run is refused unless the new run resumes it or is told to overwrite it.
Temporary files an interrupted atomic write left behind (``.NAME.XXXX.tmp``, see
``medseg.atomic``) are removed once the lock is held: nobody else can be writing them.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from medseg.errors import MedsegError

try:  # POSIX only; elsewhere the folder is not locked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"


def holds_run(out: Path) -> bool:
    """True when ``out`` holds anything but the lock file."""
    return out.is_dir() and any(p.name != LOCK_NAME for p in out.iterdir())


def orphan_temp_files(out: Path) -> list[Path]:
    """Temporary files of interrupted atomic writes in ``out`` and ``out/checkpoints``."""
    found: list[Path] = []
    for folder in (out, out / "checkpoints"):
        if folder.is_dir():
            found += [p for p in folder.glob(".*.tmp") if p.is_file()]
    return sorted(found)


def _lock(out: Path):
    handle = open(out / LOCK_NAME, "a+")  # noqa: SIM115 - held open for the whole run
    if fcntl is None:
        return handle
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise MedsegError(
            f"{out}: another training is writing into this folder (it holds {LOCK_NAME})"
        ) from None
    return handle


@contextmanager
def claim_run_folder(out: str | Path, *, resume: bool, overwrite: bool) -> Iterator[list[Path]]:
    """Hold ``out``'s lock for the ``with`` block; yields the orphan temp files it removed.

    A folder holding a previous run is refused unless ``resume`` (continue it) or ``overwrite``
    (its ``checkpoints/`` are removed first, so no stale ``best`` outlives the new run)."""
    out = Path(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    handle = _lock(out)
    try:
        if holds_run(out) and not resume and not overwrite:
            raise MedsegError(
                f"{out}: holds a previous run; pass --resume to continue it or --overwrite to replace it"
            )
        removed = orphan_temp_files(out)
        for path in removed:
            path.unlink(missing_ok=True)
        if overwrite and not resume:
            shutil.rmtree(out / "checkpoints", ignore_errors=True)
        yield removed
    except BaseException:
        if created and not holds_run(out):  # failed before writing anything: leave no folder
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        handle.close()
