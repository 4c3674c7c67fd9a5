"""Shared test setup: one torch thread per xdist worker, real data through MEDSEG_DATA.

The tests mirror the package: ``tests/models`` tests ``medseg/models`` and so on; tests of
top-level modules (``config.py``, ``export.py``) sit in ``tests/`` itself, and
``tests/architecture`` checks the import graph.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

os.environ.setdefault("MEDSEG_NO_PROGRESS", "1")
torch.set_num_threads(1)


def _shared_data(name: str | None = None) -> Path:
    """The real datasets folder (or one dataset in it); skips the test when MEDSEG_DATA is unset
    or the dataset is missing."""
    root = os.environ.get("MEDSEG_DATA")
    if not root:
        pytest.skip("MEDSEG_DATA is not set (real-data test)")
    path = Path(root) / name if name else Path(root)
    if not path.is_dir():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="session")
def real_data() -> Callable[[str], Path]:
    """``real_data("ph2")`` -> the PH2 folder under MEDSEG_DATA; the test skips without it.

    The one place that decides whether a real-data test runs (session-scoped, so module-scoped
    fixtures may use it too)."""
    return _shared_data


@pytest.fixture
def data_root() -> Path:
    """The MEDSEG_DATA folder itself (skips when unset)."""
    return _shared_data()
