"""Atomic writes keep the umask's file mode (not mkstemp's 0600)."""

from __future__ import annotations

import os
import stat

import pytest

from medseg.atomic import atomic_write_bytes, atomic_write_text, current_umask


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(umask, mode, tmp_path):
    old = os.umask(umask)
    try:
        assert current_umask() == umask
        a = atomic_write_text(tmp_path / "a.txt", "x")
        b = atomic_write_bytes(tmp_path / "b.bin", b"x")
        with open(tmp_path / "plain.txt", "w") as fh:  # what open() gives, the reference
            fh.write("x")
    finally:
        os.umask(old)
    expected = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert expected == mode
    assert stat.S_IMODE(a.stat().st_mode) == mode and stat.S_IMODE(b.stat().st_mode) == mode
