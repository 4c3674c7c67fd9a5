"""User-facing errors.

A :class:`MedsegError` carries one line that names the file (or option) and the
problem. The CLI prints that line without a traceback unless ``--debug`` is set.
"""

from __future__ import annotations


class MedsegError(Exception):
    """An error caused by the user's input (data, config, checkpoint, options)."""


class DataError(MedsegError):
    """A dataset file or folder is missing, unreadable or inconsistent."""


class ConfigError(MedsegError):
    """A configuration value or key is invalid."""


class CheckpointError(MedsegError):
    """A checkpoint is missing, corrupt or belongs to another model."""


class MedsegNote(UserWarning):
    """Something the user should know that does not stop the work (a repaired file geometry, files
    skipped); the ``medseg`` command shows it as one ``medseg: note:`` line."""
