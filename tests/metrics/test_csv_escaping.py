"""per_case.csv: case ids a spreadsheet would run as formulas are written as text, and read back
exactly."""

from __future__ import annotations

import csv
import io

import pytest

from medseg.metrics.records import read_records, records_csv

IDS = ['=HYPERLINK("http://x")', "+1", "-2", "@SUM(A1)", "\tx", "'quoted", "plain", "a=b"]


def test_formula_like_case_ids_are_escaped_and_read_back(tmp_path):
    records = [{"case": cid, "class": "lesion", "dice": -0.0 if i else 0.5} for i, cid in enumerate(IDS)]
    text = records_csv(records)
    cells = [row["case"] for row in csv.DictReader(io.StringIO(text))]
    for cell, cid in zip(cells, IDS):
        dangerous = cid[0] in "=+-@\t'"
        assert cell == ("'" + cid if dangerous else cid)
        assert not cell.startswith(("=", "+", "-", "@", "\t"))
    (tmp_path / "per_case.csv").write_text(text)
    back = read_records(tmp_path / "per_case.csv")
    assert [r["case"] for r in back] == IDS
    assert back[0]["dice"] == 0.5 and back[1]["dice"] == 0.0  # numbers are not escaped


@pytest.mark.parametrize("name", ["-lesion", "=x"])
def test_class_names_are_escaped_too(name):
    text = records_csv([{"case": "a", "class": name, "dice": 1.0}])
    assert next(csv.DictReader(io.StringIO(text)))["class"] == "'" + name
