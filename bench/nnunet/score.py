"""Score nnU-Net's and medseg's test predictions with the same code: medseg's metrics.

usage (from the repository root, with medseg's venv): python bench/nnunet/score.py WORK

Reads WORK/split.json, WORK/reference/<id>.npy and the label files that bench/nnunet/run.py left in
WORK/predictions/{nnunet,medseg}; prints a Markdown table and writes WORK/scores.md and
WORK/scores.json (per-case records, summaries, paired tests).

Every test case is scored by medseg.metrics.evaluate_case on the grid of its reference: PH2 per
image (lesion class), ACDC per 3-D volume (the slice predictions stacked back; classes RV, MYO,
LV), in pixel / voxel units because the SSL4MIS volumes carry no spacing (so a through-plane voxel
counts as 1, like an in-plane one). A structure present in the reference but missing from a
prediction gets Dice 0 and, for HD95, the image diagonal (medseg's "max" empty policy), so every
case stays in the paired tests. The per-case value of a multi-class case is its mean over the
foreground classes. The paired test is the two-sided Wilcoxon signed-rank test (scipy.stats.wilcoxon,
Wilcoxon 1945) on the per-case values of the two tools.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import stats

from medseg.metrics import evaluate_case

TOOLS = {"nnunet": Path("predictions/nnunet"), "medseg": Path("predictions/medseg/masks")}
EXTS = (".png", ".nii.gz", ".npy")
EMPTY = "max"


def fail(message: str) -> None:
    print(f"score.py: {message}", file=sys.stderr)
    raise SystemExit(2)


def read_labels(path: Path, num_classes: int) -> np.ndarray:
    """A label file written by either tool, as class indices on the reference's axes."""
    if path.name.endswith(".npy"):
        labels = np.load(path)
    elif path.name.endswith(".nii.gz"):
        import nibabel as nib

        labels = np.asarray(nib.load(str(path)).dataobj)
        labels = labels.transpose(2, 1, 0) if labels.ndim == 3 else labels.T  # (x, y, z) -> (z, y, x)
    else:
        labels = np.asarray(Image.open(path))
    if num_classes == 2:
        return (labels > 0).astype(np.uint8)  # nnU-Net writes 0/1, medseg 0/255
    return labels.astype(np.uint8)


def find_prediction(folder: Path, case: str) -> Path:
    for ext in EXTS:
        if (folder / f"{case}{ext}").is_file():
            return folder / f"{case}{ext}"
    fail(f"{folder}: no prediction for test case {case} ({', '.join(EXTS)})")
    raise AssertionError


def score_case(pred: np.ndarray, ref: np.ndarray, num_classes: int, where: Path) -> dict:
    if pred.shape != ref.shape:
        fail(f"{where}: prediction shape {pred.shape} differs from the reference's {ref.shape}")
    if pred.max(initial=0) >= num_classes:
        fail(f"{where}: holds class {int(pred.max())}, outside 0..{num_classes - 1}")
    per_class = evaluate_case(pred, ref, num_classes, empty=EMPTY)
    keep = ("dice", "hd95", "sensitivity", "precision", "empty_pred", "empty_target")
    classes = {c: {k: per_class[c][k] for k in keep} for c in per_class}
    return {
        "dice": float(np.mean([v["dice"] for v in classes.values()])),
        "hd95": float(np.mean([v["hd95"] for v in classes.values()])),
        "classes": classes,
    }


def score_tool(work: Path, tool: str, meta: dict, folders: dict[str, Path] = TOOLS) -> dict[str, dict] | None:
    folder = work / folders[tool]
    if not folder.is_dir():
        return None
    k = meta["num_classes"]
    out = {}
    for case in meta["test"]:
        path = find_prediction(folder, case)
        ref = np.load(work / "reference" / f"{case}.npy")
        out[case] = score_case(read_labels(path, k), ref, k, path)
    return out


def describe(values: list[float]) -> dict:
    a = np.asarray(values, dtype=float)
    return {"mean": float(np.mean(a)), "median": float(np.median(a)), "std": float(np.std(a)), "n": len(a)}


def summarize(cases: dict[str, dict], class_names: list[str]) -> dict:
    summary = {"dice": describe([c["dice"] for c in cases.values()])}
    summary["hd95"] = describe([c["hd95"] for c in cases.values()])
    summary["classes"] = {}
    for idx, name in enumerate(class_names):
        if idx == 0:
            continue
        summary["classes"][name] = {
            m: describe([c["classes"][idx][m] for c in cases.values()]) for m in ("dice", "hd95")
        }
        summary["classes"][name]["missed"] = sum(
            bool(c["classes"][idx]["empty_pred"] and not c["classes"][idx]["empty_target"])
            for c in cases.values()
        )
    return summary


def paired(a: list[float], b: list[float], higher_is_better: bool) -> dict:
    """Wilcoxon signed-rank on the pairs (a_i, b_i); 'a_better' counts cases where a wins."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    diff = x - y
    better = int(np.sum(diff > 0 if higher_is_better else diff < 0))
    worse = int(np.sum(diff < 0 if higher_is_better else diff > 0))
    res = {"n": len(x), "a_better": better, "a_worse": worse, "ties": len(x) - better - worse}
    if better + worse == 0:
        return {**res, "statistic": math.nan, "p_value": 1.0}
    test = stats.wilcoxon(x, y, alternative="two-sided")
    return {**res, "statistic": float(test.statistic), "p_value": float(test.pvalue)}


def compare(scores: dict[str, dict], meta: dict, other: str = "medseg", baseline: str = "nnunet") -> dict:
    """Paired tests of the ``baseline`` prediction set (nnU-Net) against the set ``other``."""
    a, b = scores[baseline], scores[other]
    ids = meta["test"]
    out = {
        "dice": paired([a[i]["dice"] for i in ids], [b[i]["dice"] for i in ids], True),
        "hd95": paired([a[i]["hd95"] for i in ids], [b[i]["hd95"] for i in ids], False),
    }
    if meta["num_classes"] > 2:
        for idx, name in enumerate(meta["class_names"][1:], start=1):
            out[f"dice_{name}"] = paired(
                [a[i]["classes"][idx]["dice"] for i in ids], [b[i]["classes"][idx]["dice"] for i in ids], True
            )
    return out


# ----------------------------------------------------------------------------- report


def run_info(work: Path, tool: str, folder: Path | None = None) -> dict:
    """The ``run_TOOL.json`` that run.py wrote for a prediction set: the one in WORK, or for a
    variant folder outside WORK (another WORK's predictions), the one of that WORK."""
    base = tool.split("+")[0]
    if folder is not None:
        for parent in (work / folder).resolve().parents:
            if (parent / "split.json").is_file() and (parent / f"run_{base}.json").is_file():
                return json.loads((parent / f"run_{base}.json").read_text())
    path = work / f"run_{base}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def training_cell(info: dict) -> str:
    if not info:
        return "n/a"
    train = next((p for p in info["phases"] if p["phase"] == "train"), None)
    load, cpu = "", ""
    if train is not None:
        during = train.get("loadavg_1min_mean_during")
        load = f", load {train['loadavg_before'][0]:.1f}→{train['loadavg_after'][0]:.1f}"
        load += "" if during is None else f" (mean {during:.1f})"
        cpu = "" if "cpu_seconds" not in train else f", {train['cpu_seconds'] / 60:.1f} CPU-min"
    batch = f" × batch {info['batch_size']}" if "batch_size" in info else ""
    return (
        f"{info['budget_minutes']:g} min budget: {info['steps']} steps{batch}, {info['epochs']} epochs, "
        f"train process {info['train_process_seconds'] / 60:.1f} min{cpu}{load}"
    )


def markdown(
    work: Path,
    meta: dict,
    summaries: dict,
    tests: dict[str, dict],
    folders: dict[str, Path] | None = None,
    baseline: str = "nnunet",
) -> str:
    names = meta["class_names"][1:]
    multi = len(names) > 1
    head = ["tool", "mean Dice", "median Dice", "HD95 median (px)"]
    head += [f"{n} Dice" for n in names] if multi else []
    head += ["predict (s)", "training done"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for tool, s in summaries.items():
        info = run_info(work, tool, (folders or {}).get(tool))
        tta = "" if not info or "+" in tool else (" (TTA)" if info.get("tta") else " (no TTA)")
        row = [
            f"{tool}{tta}",
            f"{s['dice']['mean']:.3f}",
            f"{s['dice']['median']:.3f}",
            f"{s['hd95']['median']:.1f}",
        ]
        row += [f"{s['classes'][n]['dice']['mean']:.3f}" for n in names] if multi else []
        row += [f"{info.get('predict_seconds', math.nan):.0f}", training_cell(info)]
        lines.append("| " + " | ".join(row) + " |")
    unit = "volumes" if multi else "images"
    lines.insert(
        0,
        f"{meta['dataset']}: {len(meta['test'])} test {unit}, trained on {len(meta['train'])} "
        f"(+{len(meta['val'])} validation); scored with medseg.metrics\n",
    )
    if tests:
        lines += ["", f"Paired Wilcoxon signed-rank (two-sided), {baseline} vs each other set, per case:", ""]
        lines += [
            f"| other set | metric | n | {baseline} better | worse | ties | p |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for other, by_metric in tests.items():
            for metric, t in by_metric.items():
                lines.append(
                    f"| {other} | {metric} | {t['n']} | {t['a_better']} | {t['a_worse']} | {t['ties']} "
                    f"| {t['p_value']:.2g} |"
                )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("work", type=Path, help="folder prepared by prepare.py and filled by run.py")
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=FOLDER",
        help="another prediction folder (relative to WORK; it may be another WORK's) to score and pair "
        "with the baseline, e.g. medseg+tta=predictions/medseg_tta/masks; NAME starts with 'medseg+' "
        "or 'nnunet+'",
    )
    ap.add_argument(
        "--baseline", default="nnunet", help="the set every other set is paired with (default nnunet)"
    )
    args = ap.parse_args(argv)
    folders = dict(TOOLS)
    for spec in args.variant:
        name, sep, rel = spec.partition("=")
        if not sep or not name.startswith(("medseg+", "nnunet+")):
            fail(f"--variant {spec!r}: expected medseg+NAME=FOLDER or nnunet+NAME=FOLDER")
        folders[name] = Path(rel)
    if args.baseline not in folders:
        fail(f"--baseline {args.baseline!r}: not one of {', '.join(folders)}")
    if not (args.work / "split.json").is_file():
        fail(f"{args.work}: no split.json (run bench/nnunet/prepare.py first)")
    meta = json.loads((args.work / "split.json").read_text())
    scores = {t: s for t in folders if (s := score_tool(args.work, t, meta, folders)) is not None}
    if not scores:
        fail(f"{args.work}: no predictions under {', '.join(str(p) for p in folders.values())}")
    summaries = {t: summarize(s, meta["class_names"]) for t, s in scores.items()}
    others = [t for t in scores if t != args.baseline] if args.baseline in scores else []
    tests = {t: compare(scores, meta, t, args.baseline) for t in others}
    text = markdown(args.work, meta, summaries, tests, folders, args.baseline)
    print(text)
    (args.work / "scores.md").write_text(text)
    result = {"empty_policy": EMPTY, "summaries": summaries, "wilcoxon": tests, "cases": scores}
    tmp = args.work / "scores.json.tmp"
    tmp.write_text(json.dumps(result, indent=2, default=float) + "\n")
    tmp.replace(args.work / "scores.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
