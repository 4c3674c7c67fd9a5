"""Hypothesis profiles of the fuzz tests, and the outcome counts of a run.

``ci`` (the default): 60 examples per test, derandomized (a fixed seed, the same examples on
every run), no deadline (the CPU is shared). ``long``: 2,000 examples per test (``MEDSEG_FUZZ_EXAMPLES`` to change it), random seeds.
Choose with ``HYPOTHESIS_PROFILE=long``. With ``MEDSEG_FUZZ_COUNTS=FILE`` the outcome of every
example (clean error / accepted) is counted per test and written to FILE as JSON at the end;
a crash (any exception but medseg's own) or a silently wrong result fails the test instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fuzz_outcome import COUNTS

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # an optional test dependency (the ``test`` extra): skip the fuzz tests
    collect_ignore_glob = ["test_*.py"]
else:
    _COMMON = dict(
        deadline=None,
        database=None,  # nothing written into the checkout (.hypothesis/)
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    settings.register_profile("ci", max_examples=60, derandomize=True, print_blob=True, **_COMMON)
    long_examples = int(os.environ.get("MEDSEG_FUZZ_EXAMPLES", "2000"))
    settings.register_profile("long", max_examples=long_examples, **_COMMON)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session", autouse=True)
def _write_counts():
    yield
    target = os.environ.get("MEDSEG_FUZZ_COUNTS")
    if target and COUNTS:
        Path(target).write_text(json.dumps({k: dict(v) for k, v in sorted(COUNTS.items())}, indent=2))
