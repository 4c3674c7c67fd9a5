"""Pool the per-case scores of several WORK folders (disjoint test sets) and compare nnU-Net with
medseg case by case: mean/median Dice and HD95, better/worse counts, paired Wilcoxon.

    python bench/nnunet/pooled.py WORK_A WORK_B [--other medseg]

Each WORK's ``scores.json`` (written by ``score.py``) holds the per-case values of both tools. A case
id that appears in two WORKs is refused: a case tested twice is not two cases.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from score import describe, paired  # same folder: run as `python bench/nnunet/pooled.py`


def pooled_cases(works: list[Path], other: str) -> list[tuple[str, dict, dict]]:
    """(case, nnU-Net values, ``other`` values) of every case of every WORK, each case once."""
    rows: list[tuple[str, dict, dict]] = []
    seen: dict[str, Path] = {}
    for work in works:
        cases = json.loads((work / "scores.json").read_text())["cases"]
        for case, values in cases["nnunet"].items():
            if case in seen:
                raise SystemExit(
                    f"{work}: case {case} was already tested in {seen[case]}; test sets must be disjoint"
                )
            seen[case] = work
            rows.append((case, values, cases[other][case]))
    return rows


def compare(rows: list[tuple[str, dict, dict]], metric: str) -> dict:
    """Summary and paired Wilcoxon of ``metric`` (higher Dice / lower HD95 is better), with
    ``score.py``'s own ``describe`` and ``paired``."""
    a = [r[1][metric] for r in rows]
    b = [r[2][metric] for r in rows]
    test = paired(a, b, higher_is_better=metric == "dice")
    nn, other = describe(a), describe(b)
    return {
        "n": test["n"],
        "nnunet_mean": nn["mean"],
        "nnunet_median": nn["median"],
        "other_mean": other["mean"],
        "other_median": other["median"],
        "nnunet_better": test["a_better"],
        "nnunet_worse": test["a_worse"],
        "p": test["p_value"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("works", type=Path, nargs="+")
    ap.add_argument("--other", default="medseg", help="the set compared with nnU-Net (default medseg)")
    args = ap.parse_args(argv)
    rows = pooled_cases(args.works, args.other)
    for metric in ("dice", "hd95"):
        r = compare(rows, metric)
        print(
            f"{metric}: n={r['n']} nnU-Net mean {r['nnunet_mean']:.4f} median {r['nnunet_median']:.3f} | "
            f"{args.other} mean {r['other_mean']:.4f} median {r['other_median']:.3f} | "
            f"nnU-Net better {r['nnunet_better']}, worse {r['nnunet_worse']}, p={r['p']:.2g}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
