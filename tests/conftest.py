"""Shared test setup: one torch thread per xdist worker, real data through MEDSEG_DATA."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("MEDSEG_NO_PROGRESS", "1")
torch.set_num_threads(1)


def shared_data(name: str | None = None) -> Path:
    """The real datasets folder (or one dataset in it); skips the test when MEDSEG_DATA is unset."""
    root = os.environ.get("MEDSEG_DATA")
    if not root:
        pytest.skip("MEDSEG_DATA is not set (real-data test)")
    path = Path(root) / name if name else Path(root)
    if not path.exists():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture
def data_root() -> Path:
    return shared_data()
