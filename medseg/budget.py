"""Wall-time budgets: one parser for ``medseg train --budget``, ``medseg benchmark --budget``,
``train.budget_minutes`` in configs and :func:`medseg.benchmark.runner.run_benchmark`.

A plain number is minutes everywhere; a unit suffix says otherwise: ``90s``, ``10m``, ``1.5h``.
"""

from __future__ import annotations

import math
import re

from medseg.errors import ConfigError

_UNIT_MINUTES = {"s": 1 / 60, "sec": 1 / 60, "m": 1.0, "min": 1.0, "h": 60.0}
_DURATION = re.compile(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*")
EXAMPLES = "90s, 10m, 1.5h or a plain number of minutes"


def parse_budget(value: str | float | int | None) -> float | None:
    """A budget -> minutes (``None`` stays ``None``).

    ``"90s"`` -> 1.5, ``"10m"`` -> 10, ``"1.5h"`` -> 90, ``"10"`` or ``10`` -> 10 (minutes).
    Raises :class:`~medseg.errors.ConfigError` naming the value for anything else, and for
    budgets that are not positive and finite.
    """
    if value is None:
        return None
    if isinstance(value, bool):  # bool is an int subclass: True would read as one minute
        raise ConfigError(f"budget {value!r}: expected a duration such as {EXAMPLES}")
    if isinstance(value, int | float):
        minutes = float(value)
    else:
        match = _DURATION.fullmatch(str(value).lower())
        if not match or match.group(2) not in ("", *_UNIT_MINUTES):
            raise ConfigError(f"budget {value!r}: expected a duration such as {EXAMPLES}")
        minutes = float(match.group(1)) * _UNIT_MINUTES.get(match.group(2), 1.0)
    if not (math.isfinite(minutes) and minutes > 0):
        raise ConfigError(f"budget {value!r}: must be a positive duration such as {EXAMPLES}")
    return minutes
