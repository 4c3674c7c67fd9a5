"""One budget parser for `medseg train --budget`, `medseg benchmark --budget` and
train.budget_minutes: plain numbers are minutes, s/m/h suffixes are accepted."""

from __future__ import annotations

import pytest

from medseg.budget import parse_budget
from medseg.config import load_config
from medseg.errors import ConfigError


@pytest.mark.parametrize(
    ("given", "minutes"),
    [
        ("90s", 1.5),
        ("10m", 10.0),
        ("1.5h", 90.0),
        ("10", 10.0),  # a plain number is minutes, for train and benchmark alike
        (10, 10.0),
        (0.5, 0.5),
        (" 2 m ", 2.0),
        ("45sec", 0.75),
        ("3min", 3.0),
        ("2H", 120.0),
    ],
)
def test_units_and_plain_minutes(given, minutes):
    assert parse_budget(given) == pytest.approx(minutes)


def test_none_means_no_budget():
    assert parse_budget(None) is None


@pytest.mark.parametrize("bad", ["soon", "ten minutes", "5d", "m", "", "1e999", "-5m", "0", 0, -1, True])
def test_bad_values_raise_a_config_error_naming_the_value(bad):
    with pytest.raises(ConfigError, match=r"budget .*(expected a duration|positive).*90s, 10m, 1\.5h"):
        parse_budget(bad)


def test_config_field_accepts_units_and_rejects_bad_values():
    assert load_config(None, ["train.budget_minutes=90s"]).train.budget_minutes == pytest.approx(1.5)
    assert load_config(None, ["train.budget_minutes=7"]).train.budget_minutes == 7
    assert load_config(None, []).train.budget_minutes is None
    with pytest.raises(ConfigError, match="train.budget_minutes: .*'soon'"):
        load_config(None, ["train.budget_minutes=soon"])
