"""The loss registry: ``LOSSES.build("dice", mode="binary")``; names are used by configs and the CLI."""

from __future__ import annotations

from medseg.registry import Registry

LOSSES = Registry("loss")
