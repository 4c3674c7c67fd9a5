"""Paired comparison of two evaluation runs on the same cases (``medseg compare RUN_A RUN_B``).

Per case, the metric is averaged over classes (undefined values skipped) unless a class is
chosen; cases present in both runs are paired and the differences B - A tested with the
Wilcoxon signed-rank test (Wilcoxon 1945; ``scipy.stats.wilcoxon``, two-sided, zero differences
dropped as in Wilcoxon's original method). Effect sizes: the matched-pairs rank-biserial
correlation r = (R+ - R-) / (R+ + R-) (Kerby 2014; +1: every non-zero difference is positive) and
Cohen's d_z = mean(d) / sd(d). Positive differences mean B has the larger value; whether that is
better depends on the metric (``b_better`` says it).
"""

from __future__ import annotations

import csv
import io
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from medseg.atomic import atomic_write, atomic_write_text
from medseg.errors import DataError
from medseg.metrics.case import HIGHER_IS_BETTER
from medseg.metrics.plots import paired_plot
from medseg.metrics.records import read_records, to_json


def find_eval_dir(path: str | os.PathLike) -> Path:
    """A folder holding per_case.json/csv: the folder itself, or RUN/eval/<split> (``test`` preferred)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such run or evaluation folder")
    if (p / "per_case.json").is_file() or (p / "per_case.csv").is_file():
        return p
    found = sorted(
        {q.parent for q in p.glob("eval/*/per_case.*")} | {q.parent for q in p.glob("*/per_case.*")}
    )
    if len(found) == 1:
        return found[0]
    for q in found:
        if q.name == "test":
            return q
    if not found:
        raise DataError(
            f"{p}: no per_case.json or per_case.csv here or in {p}/eval/<split>/ (run medseg evaluate)"
        )
    raise DataError(f"{p}: several evaluations ({', '.join(str(q) for q in found)}); pass one of them")


def _case_scores(records: list[dict[str, Any]], metric: str, class_name: str | None) -> dict[str, float]:
    vals: dict[str, list[float]] = {}
    for r in records:
        if class_name is not None and r["class"] != class_name:
            continue
        if metric not in r:
            raise DataError(f"the per-case records have no metric {metric!r}")
        vals.setdefault(r["case"], []).append(float(r[metric]))
    out = {}
    for cid, v in vals.items():
        finite = [x for x in v if math.isfinite(x)]
        out[cid] = float(np.mean(finite)) if finite else float("nan")
    return out


def paired_stats(a: np.ndarray, b: np.ndarray) -> dict[str, float | int]:
    """Statistics of the paired differences d = b - a (finite pairs only)."""
    # Deferred import: scipy.stats adds ~1 s to `import medseg.metrics` (which re-exports
    # compare_runs); only a comparison pays it.
    from scipy import stats

    d = b - a
    n = int(d.size)
    out: dict[str, float | int] = {"n": n, "mean_a": float(a.mean()), "mean_b": float(b.mean())}
    out["mean_diff"] = float(d.mean())
    out["median_diff"] = float(np.median(d))
    out["std_diff"] = float(d.std(ddof=1)) if n > 1 else float("nan")
    if n > 1 and out["std_diff"] > 0:
        half = stats.t.ppf(0.975, n - 1) * out["std_diff"] / math.sqrt(n)
        out["ci95_low"], out["ci95_high"] = out["mean_diff"] - half, out["mean_diff"] + half
        out["cohens_dz"] = out["mean_diff"] / out["std_diff"]
    else:
        out["ci95_low"] = out["ci95_high"] = out["mean_diff"] if n > 1 else float("nan")
        out["cohens_dz"] = float("nan")
    nz = d[d != 0]
    out["n_nonzero"] = int(nz.size)
    out["n_b_larger"], out["n_a_larger"] = int((d > 0).sum()), int((d < 0).sum())
    if nz.size == 0:
        out["wilcoxon_w"], out["p_value"], out["rank_biserial"] = float("nan"), 1.0, 0.0
        return out
    ranks = stats.rankdata(np.abs(nz))
    r_plus, r_minus = float(ranks[nz > 0].sum()), float(ranks[nz < 0].sum())
    out["rank_biserial"] = (r_plus - r_minus) / (r_plus + r_minus)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-sample / ties notes from SciPy
        res = stats.wilcoxon(nz, zero_method="wilcox", alternative="two-sided")
    out["wilcoxon_w"] = float(res.statistic)
    out["p_value"] = float(res.pvalue)
    return out


def compare_runs(
    eval_dir_a: str | os.PathLike,
    eval_dir_b: str | os.PathLike,
    out_dir: str | os.PathLike,
    metric: str = "dice",
    *,
    class_name: str | None = None,
    per_class: bool = True,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Compare run B with run A case by case; write compare.json, compare_cases.csv, compare.png.

    ``eval_dir_a``/``eval_dir_b`` are evaluation folders (with per_case.json or .csv) or run
    folders (``RUN/eval/<split>/`` is found). Returns the statistics (see :func:`paired_stats`)
    plus ``metric``, ``b_better`` (True/False, None when not significant at ``alpha``),
    ``only_in_a``/``only_in_b`` (unpaired cases), ``n_undefined`` (pairs dropped because a score
    was nan), ``per_class`` (the same statistics per class) and ``files``.
    """
    if metric not in HIGHER_IS_BETTER:
        raise ValueError(f"unknown metric {metric!r}; choose one of {list(HIGHER_IS_BETTER)}")
    dir_a, dir_b = find_eval_dir(eval_dir_a), find_eval_dir(eval_dir_b)
    rec_a, rec_b = read_records(dir_a), read_records(dir_b)

    sa, sb = _case_scores(rec_a, metric, class_name), _case_scores(rec_b, metric, class_name)
    result, pairs, a, b = _compare_scores(sa, sb)
    if not pairs:
        raise DataError(f"{dir_a} and {dir_b} share no case with a defined {metric} (nothing to compare)")
    result.update(
        metric=metric,
        class_name=class_name,
        run_a=str(dir_a),
        run_b=str(dir_b),
        only_in_a=sorted(set(sa) - set(sb)),
        only_in_b=sorted(set(sb) - set(sa)),
        higher_is_better=HIGHER_IS_BETTER[metric],
        alpha=alpha,
    )
    sig = result["p_value"] < alpha
    better_if_larger = result["mean_diff"] > 0 if HIGHER_IS_BETTER[metric] else result["mean_diff"] < 0
    result["b_better"] = bool(better_if_larger) if sig else None
    if per_class and class_name is None:
        result["per_class"] = _per_class(rec_a, rec_b, metric)
    _write_outputs(Path(out_dir), result, pairs, a, b, metric, dir_a, dir_b)
    return result


def _compare_scores(
    sa: dict[str, float], sb: dict[str, float]
) -> tuple[dict[str, Any], list, np.ndarray, np.ndarray]:
    """Pair the cases scored in both runs; statistics of the pairs where both scores are defined."""
    shared = [c for c in sa if c in sb]
    pairs = [(c, sa[c], sb[c]) for c in shared if math.isfinite(sa[c]) and math.isfinite(sb[c])]
    a = np.asarray([p[1] for p in pairs], dtype=np.float64)
    b = np.asarray([p[2] for p in pairs], dtype=np.float64)
    res: dict[str, Any] = {"n_shared": len(shared), "n_undefined": len(shared) - len(pairs)}
    if pairs:
        res.update(paired_stats(a, b))
    return res, pairs, a, b


def _per_class(rec_a: list[dict[str, Any]], rec_b: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """The paired statistics of each class present in both runs."""
    classes = list(dict.fromkeys(r["class"] for r in rec_a if any(q["class"] == r["class"] for q in rec_b)))
    return {
        c: _compare_scores(_case_scores(rec_a, metric, c), _case_scores(rec_b, metric, c))[0] for c in classes
    }


def _write_outputs(
    out: Path,
    result: dict[str, Any],
    pairs: list,
    a: np.ndarray,
    b: np.ndarray,
    metric: str,
    dir_a: Path,
    dir_b: Path,
) -> None:
    """Write compare_cases.csv, compare.png and compare.json (atomically) and record their
    paths in ``result["files"]``."""
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["case", f"{metric}_a", f"{metric}_b", "diff_b_minus_a"])
    for cid, x, y in pairs:
        w.writerow([cid, repr(x), repr(y), repr(y - x)])
    files = {
        "cases_csv": atomic_write_text(out / "compare_cases.csv", buf.getvalue()),
        "plot_png": atomic_write(
            out / "compare.png",
            lambda p: paired_plot(
                a, b, p, metric, Path(dir_a).as_posix(), Path(dir_b).as_posix(), result["p_value"]
            ),
        ),
    }
    files["json"] = out / "compare.json"
    result["files"] = {k: str(v) for k, v in files.items()}
    atomic_write_text(files["json"], to_json(result))
