"""A tiny name -> builder registry shared by models and losses.

A name is either a builder registered as it is, or a *preset*: one builder with some arguments
fixed (``fixed``: not options of that name, e.g. the FCN stride variant) and some defaults
changed (``defaults``: still options, e.g. BEFUnet-small's width). Variants are declared by what
differs, as a table over one builder (the way timm declares its model variants).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from medseg.errors import ConfigError

_OPTION_KINDS = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


@dataclass(frozen=True)
class Entry:
    """One registered name: its builder, the builder arguments it fixes, its changed defaults,
    and metadata (``paper``, ``summary``) for ``medseg list``."""

    name: str
    builder: Callable[..., Any]
    kind: str = "entry"
    meta: Mapping[str, Any] = field(default_factory=dict)
    fixed: Mapping[str, Any] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def signature(self) -> inspect.Signature:
        """The builder's signature as this name offers it: fixed arguments removed, preset
        defaults filled in."""
        params = []
        for p in inspect.signature(self.builder).parameters.values():
            if p.name in self.fixed:
                continue
            params.append(p.replace(default=self.defaults[p.name]) if p.name in self.defaults else p)
        return inspect.Signature(params)

    def option_names(self) -> list[str] | None:
        """Keyword options this name accepts (None: the builder takes ``**kwargs``)."""
        params = self.signature().parameters.values()
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return None
        return [p.name for p in params if p.kind in _OPTION_KINDS]

    def build(self, **kwargs: Any) -> Any:
        """Call the builder with the preset's defaults, then ``kwargs``, then the fixed arguments;
        an option this name does not accept raises :class:`ConfigError` with the close names."""
        check_options(self.option_names(), kwargs, f"{self.kind} '{self.name}'")
        try:
            return self.builder(**{**self.defaults, **kwargs, **self.fixed})
        except NotImplementedError:  # e.g. building on the meta device: the caller falls back
            raise
        except (ValueError, RuntimeError) as exc:
            if not kwargs:  # the defaults fail: a bug, not a bad option, so keep the traceback
                raise
            shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
            raise OptionError(f"{self.kind} '{self.name}' with {shown}: {str(exc).splitlines()[0]}") from exc


class OptionError(ConfigError, ValueError):
    """A builder refused its options (e.g. ``base_width=-1``): one line for the CLI, and still the
    ``ValueError`` the builder raised for code that catches that."""


class Registry:
    """Maps names (and aliases) to builders, with metadata for ``medseg list``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._aliases: dict[str, str] = {}

    def add(
        self,
        name: str,
        builder: Callable[..., Any],
        *,
        aliases: tuple[str, ...] = (),
        fixed: Mapping[str, Any] | None = None,
        defaults: Mapping[str, Any] | None = None,
        **meta: Any,
    ) -> Entry:
        """Register ``builder`` under ``name``; ``fixed`` and ``defaults`` make it a preset."""
        for key in (name, *aliases):
            if key in self._entries or key in self._aliases:
                raise ValueError(f"{self.kind} '{key}' is registered twice")
        params = inspect.signature(builder).parameters
        unknown = sorted((set(fixed or {}) | set(defaults or {})) - set(params))
        if unknown:
            raise ValueError(f"{self.kind} '{name}': the builder has no parameter {', '.join(unknown)}")
        entry = Entry(
            name,
            builder,
            self.kind,
            MappingProxyType(dict(meta)),
            MappingProxyType(dict(fixed or {})),
            MappingProxyType(dict(defaults or {})),
        )
        self._entries[name] = entry
        for alias in aliases:
            self._aliases[alias] = name
        return entry

    def register(self, name: str, *, aliases: tuple[str, ...] = (), **meta: Any):
        """Decorator: ``@MODELS.register("unet", paper="Ronneberger et al. 2015")``."""

        def decorator(builder: Callable[..., Any]) -> Callable[..., Any]:
            self.add(name, builder, aliases=aliases, **meta)
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
        return self.get(name).build(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def aliases_of(self, name: str) -> list[str]:
        return sorted(a for a, target in self._aliases.items() if target == name)

    def __contains__(self, name: str) -> bool:
        return name in self._entries or name in self._aliases

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries[n] for n in self.names())


def check_options(valid: list[str] | None, kwargs: Mapping[str, Any], what: str) -> None:
    """Reject keyword options not in ``valid`` (None: anything goes), suggesting the close names
    and listing the valid ones."""
    if valid is None:
        return
    unknown = [k for k in kwargs if k not in valid]
    if not unknown:
        return
    hints = []
    for u in unknown:
        close = difflib.get_close_matches(u, valid, n=1)
        hints.append(f"{u!r} (did you mean {close[0]!r}?)" if close else repr(u))
    raise ConfigError(f"{what} has no option {', '.join(hints)}; valid options: {', '.join(valid)}")
