"""Pool the per-case scores of several WORK folders (disjoint test sets) and compare nnU-Net with
medseg case by case: mean/median Dice and HD95, better/worse counts, paired Wilcoxon.

    python bench/nnunet/pooled.py WORK_A WORK_B [--other medseg]

Each WORK's ``scores.json`` (written by ``score.py``) holds the per-case values of both tools. A case
id that appears in two WORKs is refused: a case tested twice is not two cases.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from scipy.stats import wilcoxon


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
    """Summary and paired Wilcoxon of ``metric`` (higher Dice / lower HD95 is better)."""
    a = [r[1][metric] for r in rows]
    b = [r[2][metric] for r in rows]
    sign = 1 if metric == "dice" else -1
    return {
        "n": len(rows),
        "nnunet_mean": statistics.mean(a),
        "nnunet_median": statistics.median(a),
        "other_mean": statistics.mean(b),
        "other_median": statistics.median(b),
        "nnunet_better": sum(sign * (x - y) > 0 for x, y in zip(a, b)),
        "nnunet_worse": sum(sign * (x - y) < 0 for x, y in zip(a, b)),
        "p": float(wilcoxon(a, b).pvalue),
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
