"""Pool the per-case scores of several WORK folders (disjoint test sets) and compare nnU-Net with
medseg case by case: mean/median Dice and HD95, better/worse counts, paired Wilcoxon.

    python bench/nnunet/pooled.py WORK_A WORK_B [--other medseg] [--baseline nnunet]

``--other`` / ``--baseline`` name any two sets of ``scores.json`` (e.g. ``--baseline medseg+notta``
pairs medseg with and without TTA).

Each WORK's ``scores.json`` (written by ``score.py``) holds the per-case values of both tools. A case
id that appears in two WORKs is refused: a case tested twice is not two cases.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from score import describe, paired  # same folder: run as `python bench/nnunet/pooled.py`


def pooled_cases(works: list[Path], other: str, baseline: str = "nnunet") -> list[tuple[str, dict, dict]]:
    """(case, ``baseline`` values, ``other`` values) of every case of every WORK, each case once."""
    rows: list[tuple[str, dict, dict]] = []
    seen: dict[str, Path] = {}
    for work in works:
        cases = json.loads((work / "scores.json").read_text())["cases"]
        for case, values in cases[baseline].items():
            if case in seen:
                raise SystemExit(
                    f"{work}: case {case} was already tested in {seen[case]}; test sets must be disjoint"
                )
            seen[case] = work
            rows.append((case, values, cases[other][case]))
    return rows


def compare(rows: list[tuple[str, dict, dict]], metric: str) -> dict:
    """Summary and paired Wilcoxon of ``metric`` (higher Dice / lower HD95 is better), with
    ``score.py``'s own ``describe`` and ``paired``; ``baseline_*`` is the first set of the rows."""
    a = [r[1][metric] for r in rows]
    b = [r[2][metric] for r in rows]
    test = paired(a, b, higher_is_better=metric == "dice")
    base, other = describe(a), describe(b)
    return {
        "n": test["n"],
        "baseline_mean": base["mean"],
        "baseline_median": base["median"],
        "other_mean": other["mean"],
        "other_median": other["median"],
        "baseline_better": test["a_better"],
        "baseline_worse": test["a_worse"],
        "p": test["p_value"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("works", type=Path, nargs="+")
    ap.add_argument("--other", default="medseg", help="the set compared with the baseline (default medseg)")
    ap.add_argument("--baseline", default="nnunet", help="the set it is paired with (default nnunet)")
    args = ap.parse_args(argv)
    rows = pooled_cases(args.works, args.other, args.baseline)
    for metric in ("dice", "hd95"):
        r = compare(rows, metric)
        print(
            f"{metric}: n={r['n']} {args.baseline} mean {r['baseline_mean']:.4f} median "
            f"{r['baseline_median']:.3f} | {args.other} mean {r['other_mean']:.4f} median "
            f"{r['other_median']:.3f} | {args.baseline} better {r['baseline_better']}, worse "
            f"{r['baseline_worse']}, p={r['p']:.2g}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
