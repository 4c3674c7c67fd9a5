"""Reports: records, summaries (checked against numpy by hand), files written atomically, worst cases."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from medseg import metrics as M
from medseg.atomic import atomic_write
from medseg.metrics import report as R
from medseg.metrics.records import FIELDS

NAN = float("nan")


def _rec(case, cls, idx, dice, hd95, *, et=False, ep=False, counts=(1, 1, 1, 1)):
    r = {"case": case, "class": cls, "class_index": idx, "dice": dice, "hd95": hd95, "empty_target": et}
    r["empty_pred"] = ep
    r.update(zip(("tp", "fp", "fn", "tn"), counts))
    return r


RECORDS = [
    _rec("c1", "liver", 1, 0.9, 2.0, counts=(90, 5, 15, 890)),
    _rec("c1", "kidney", 2, 0.5, 10.0, counts=(20, 20, 20, 940)),
    _rec("c2", "liver", 1, 0.8, 4.0, counts=(80, 20, 20, 880)),
    _rec("c2", "kidney", 2, 0.0, NAN, ep=True, counts=(0, 0, 30, 970)),
    _rec("c3", "liver", 1, 0.7, 6.0, counts=(70, 30, 30, 870)),
    _rec("c3", "kidney", 2, 1.0, 0.0, et=True, ep=True, counts=(0, 0, 0, 1000)),
]


def test_case_records_from_evaluate_case():
    t = np.zeros((8, 8), np.int64)
    t[2:5, 2:5] = 1
    p = np.roll(t, 1, axis=1)
    recs = M.case_records("case_7", M.evaluate_case(p, t, 3), ["background", "tumour", "cyst"])
    assert [r["class"] for r in recs] == ["tumour", "cyst"]
    assert recs[0]["case"] == "case_7" and recs[0]["class_index"] == 1
    assert recs[0]["dice"] == pytest.approx(M.dice(p == 1, t == 1))
    assert recs[1]["empty_target"] and recs[1]["empty_pred"]
    assert set(FIELDS) <= set(recs[0])
    with pytest.raises(ValueError, match="no name"):
        M.case_records("x", M.evaluate_case(p, t, 3), ["background"])


def test_summarize_against_numpy():
    s = M.summarize(RECORDS)
    assert s["n_cases"] == 3 and s["classes"] == ["liver", "kidney"]
    liver = s["per_class"]["liver"]["metrics"]["dice"]
    x = np.array([0.9, 0.8, 0.7])
    assert liver["mean"] == pytest.approx(x.mean())
    assert liver["std"] == pytest.approx(x.std(ddof=1))
    assert liver["median"] == pytest.approx(0.8)
    assert liver["iqr"] == pytest.approx(np.percentile(x, 75) - np.percentile(x, 25))
    k_hd = s["per_class"]["kidney"]["metrics"]["hd95"]
    assert (
        k_hd["n"] == 2 and k_hd["n_nan"] == 1 and k_hd["mean"] == pytest.approx(5.0)
    )  # nan excluded, counted
    assert s["per_class"]["kidney"]["empty"] == {"target": 1, "pred": 2, "both": 1, "one_sided": 1}
    assert s["macro"]["dice"] == pytest.approx((0.8 + 0.5) / 2)
    # micro Dice of liver from summed counts: 2*240 / (2*240 + 55 + 65)
    assert s["per_class"]["liver"]["micro"]["dice"] == pytest.approx(480 / (480 + 55 + 65))
    tp, fp, fn = 260, 75, 115
    assert s["micro"]["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    # per-case mean over classes: c1 0.7, c2 0.4, c3 0.85
    assert s["per_case"]["dice"]["mean"] == pytest.approx((0.7 + 0.4 + 0.85) / 3)


def test_summary_table_and_markdown():
    from rich.console import Console

    s = M.summarize(RECORDS)
    con = Console(record=True, width=200)
    con.print(M.summary_table(s))
    text = con.export_text()
    assert "liver" in text and "macro" in text and "0.800 ± 0.100" in text and "[1 nan]" in text
    md = R.summary_markdown(s, {"empty policy": "nan"})
    assert "| kidney | 3 | 1 | 2 | 1 | 1 | HD95 1 |" in md
    assert "**empty policy**: nan" in md


def test_write_report_files_round_trip(tmp_path):
    out = tmp_path / "eval" / "test"
    paths = M.write_report(
        RECORDS[::-1], out, ["background", "liver", "kidney"], meta={"spacing": "from NIfTI"}
    )
    assert set(paths) == {"per_case_csv", "per_case_json", "summary_json", "summary_md", "bar_png", "box_png"}
    for p in paths.values():
        assert Path(p).is_file() and Path(p).stat().st_size > 0
    for key in ("bar_png", "box_png"):
        assert Path(paths[key]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]

    def no_nan_tokens(s):
        raise AssertionError(f"non-standard JSON token {s}")

    data = json.loads(Path(paths["per_case_json"]).read_text(), parse_constant=no_nan_tokens)
    assert data["meta"] == {"spacing": "from NIfTI"}
    # case-major order (first-seen), classes in task order
    assert [(r["case"], r["class"]) for r in data["records"]][:2] == [("c3", "liver"), ("c3", "kidney")]
    json.loads(Path(paths["summary_json"]).read_text(), parse_constant=no_nan_tokens)
    for src in (paths["per_case_csv"], paths["per_case_json"], out):
        back = M.read_records(src)
        back.sort(key=lambda r: (r["case"], r["class_index"]))
        want = sorted(RECORDS, key=lambda r: (r["case"], r["class_index"]))
        assert len(back) == len(want)
        for a, b in zip(back, want):
            assert a == pytest.approx(b, nan_ok=True)


def test_write_report_rejects_unknown_class(tmp_path):
    with pytest.raises(ValueError, match="not in class_names"):
        M.write_report(RECORDS, tmp_path, ["background", "liver"], plots=False)


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "summary.md"
    target.write_text("old")

    def boom(p):
        p.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.md"]


def test_read_records_errors(tmp_path):
    from medseg.errors import DataError

    with pytest.raises(DataError, match="no per_case"):
        M.read_records(tmp_path)
    (tmp_path / "per_case.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot read"):
        M.read_records(tmp_path)


def test_worst_cases():
    worst = M.worst_cases(RECORDS, "dice", k=2)
    assert [w["case"] for w in worst] == ["c2", "c1"]  # case means 0.4, 0.7, 0.85
    assert worst[0]["score"] == pytest.approx(0.4)
    assert worst[0]["per_class"] == {"liver": 0.8, "kidney": 0.0}
    by_hd = M.worst_cases(RECORDS, "hd95", k=8)
    assert [w["case"] for w in by_hd] == ["c1", "c2", "c3"]  # 6.0, 4.0 (nan skipped), 3.0
    kid = M.worst_cases(RECORDS, "hd95", k=8, class_name="kidney")
    assert [w["case"] for w in kid] == ["c1", "c3", "c2"]  # undefined last
    assert math.isnan(kid[-1]["score"])
    with pytest.raises(ValueError, match="unknown metric"):
        M.worst_cases(RECORDS, "f1")
