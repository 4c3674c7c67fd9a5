"""Classify one fuzzed input: medseg's own error naming the file, or an accepted result that
must be sound. Anything else (another exception, an error that does not name the file, a
result with NaN or the wrong shape) fails the test."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medseg.errors import MedsegError

COUNTS: dict[str, Counter] = defaultdict(Counter)  # test -> outcome -> examples


def outcome(test: str, path: Path, call: Callable[[], Any], check: Callable[[Any], None]) -> str:
    """Run ``call``; a :class:`MedsegError` must name ``path``; a result must pass ``check``."""
    try:
        result = call()
    except MedsegError as exc:
        assert path.name in str(exc), f"error does not name the file: {exc}"
        assert "\n" not in str(exc).strip(), f"error is not one line: {exc!r}"
        COUNTS[test]["clean error"] += 1
        return "clean error"
    check(result)
    COUNTS[test]["accepted"] += 1
    return "accepted"
