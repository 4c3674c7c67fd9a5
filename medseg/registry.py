"""A tiny name -> builder registry shared by models and losses."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from medseg.errors import ConfigError


@dataclass(frozen=True)
class Entry:
    name: str
    builder: Callable[..., Any]
    meta: dict[str, Any] = field(default_factory=dict)


class Registry:
    """Maps names (and aliases) to builders, with metadata for ``medseg list``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, *, aliases: tuple[str, ...] = (), **meta: Any):
        """Decorator: ``@MODELS.register("unet", paper="Ronneberger et al. 2015")``."""

        def decorator(builder: Callable[..., Any]) -> Callable[..., Any]:
            for key in (name, *aliases):
                if key in self._entries or key in self._aliases:
                    raise ValueError(f"{self.kind} '{key}' is registered twice")
            self._entries[name] = Entry(name, builder, dict(meta))
            for alias in aliases:
                self._aliases[alias] = name
            return builder

        return decorator

    def get(self, name: str) -> Entry:
        key = self._aliases.get(name, name)
        if key not in self._entries:
            known = sorted(self._entries)
            close = difflib.get_close_matches(name, known + sorted(self._aliases), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown {self.kind} '{name}'.{hint} Known: {', '.join(known)}")
        return self._entries[key]

    def build(self, name: str, /, **kwargs: Any) -> Any:
        entry = self.get(name)
        check_kwargs(entry.builder, kwargs, f"{self.kind} '{entry.name}'")
        return entry.builder(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def aliases_of(self, name: str) -> list[str]:
        return sorted(a for a, target in self._aliases.items() if target == name)

    def __contains__(self, name: str) -> bool:
        return name in self._entries or name in self._aliases

    def __iter__(self):
        return iter(self._entries[n] for n in self.names())


def check_kwargs(fn: Callable[..., Any], kwargs: dict[str, Any], what: str) -> None:
    """Reject keyword arguments that ``fn`` does not accept, naming the valid ones."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    valid = [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    unknown = [k for k in kwargs if k not in valid]
    if unknown:
        raise ConfigError(
            f"{what} has no option {', '.join(repr(u) for u in unknown)}; valid options: {', '.join(valid)}"
        )
