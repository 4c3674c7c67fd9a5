"""HD95 and ASSD: medseg against MONAI and medpy, values side by side and timings in one run.

Run with the peer venv (it has monai and medpy; medseg installed there with --no-deps):

    .venv-bench/bin/python bench/metrics.py [--sizes 2d256,2d512,3d64,3d128]
        [--kinds typical,hard,dissimilar] [--repeats-2d 9] [--repeats-3d 3] [--no-medpy] [--json OUT.json]

Pairs: 2D 256x256 and 512x512 (spacing 0.7 x 0.7 mm), 3D 64x192x192 and 128x256x256 (spacing
2.5 x 0.8 x 0.8 mm), each with a "typical", a "hard" and a "dissimilar" prediction of a smooth
multi-lobe target (see make_pair). Calls are interleaved (each repeat runs every tool once, in
rotating order) so shared-CPU noise hits all tools alike; medians of wall time and of process CPU
time are reported with the spread (min-max of CPU time); CPU time is the steadier number on a
shared machine. A timing covers the whole user call (conversion, cropping, boundaries,
distances). ``--calibrate`` also times medseg's other distance back-ends.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings

import numpy as np
from scipy import ndimage

from medseg.metrics import assd as ms_assd
from medseg.metrics import hd95 as ms_hd95
from medseg.metrics import surface_metrics

DISSIMILAR_MIX = 1.2  # weight of the independent field: Dice about 0.4 (printed with every case)
SIZES = {
    "2d256": ("2D 256x256", (256, 256), (0.7, 0.7)),
    "2d512": ("2D 512x512", (512, 512), (0.7, 0.7)),
    "3d64": ("3D 64x192x192", (64, 192, 192), (2.5, 0.8, 0.8)),
    "3d128": ("3D 128x256x256", (128, 256, 256), (2.5, 0.8, 0.8)),
}


def _smooth(shape: tuple[int, ...], rng: np.random.Generator, sigma: float) -> np.ndarray:
    small = tuple(max(4, s // 8) for s in shape)
    noise = ndimage.gaussian_filter(rng.standard_normal(small), sigma)
    return ndimage.zoom(noise, [s / n for s, n in zip(shape, small)], order=1)


def make_pair(shape: tuple[int, ...], seed: int, kind: str = "hard") -> tuple[np.ndarray, np.ndarray]:
    """A smooth multi-lobe target (about 10 % of the image) and a prediction of it.

    ``typical``: the boundary moved by a smooth perturbation (Dice about 0.93, like a good model).
    ``hard``: shifted two voxels, holes cut inside (3 % of the volume) and false-positive blobs
    far away (Dice about 0.89): many boundary voxels lie far from the other surface.
    ``dissimilar``: a prediction that got the organ's lobes partly wrong (Dice about 0.4): the
    target field mixed with an independent one, thresholded at the same volume; large surfaces,
    most boundary voxels far (tens of voxels) from the other surface.
    """
    rng = np.random.default_rng(seed)
    field = _smooth(shape, rng, 1.5)
    target = field > np.quantile(field, 0.90)
    if kind == "dissimilar":
        other = _smooth(shape, np.random.default_rng(seed + 7), 1.5)
        mixed = field / field.std() + DISSIMILAR_MIX * other / other.std()
        return mixed > np.quantile(mixed, 0.90), target
    if kind == "typical":
        pert = _smooth(shape, np.random.default_rng(seed + 1), 0.7)
        moved = field + 0.1 * field.std() * pert / pert.std()
        return moved > np.quantile(moved, 0.90), target
    pred = np.roll(target, 2, axis=-1)
    pred = ndimage.binary_dilation(pred, iterations=1) if pred.ndim == 2 else pred
    blob = _smooth(shape, rng, 1.0)
    pred = (pred & ~(blob > np.quantile(blob, 0.97))) | (blob < np.quantile(blob, 0.002))
    return pred, target


def _time(fn) -> tuple[float, float, float]:
    w, c = time.perf_counter(), time.process_time()
    v = fn()
    return time.perf_counter() - w, time.process_time() - c, float(v)


def _tools(p: np.ndarray, t: np.ndarray, s: tuple[float, ...], calibrate: bool, medpy: bool) -> dict:
    """The calls timed for one pair, grouped by metric; every call returns the metric value."""
    import torch
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    tp, tt = torch.from_numpy(p)[None, None], torch.from_numpy(t)[None, None]

    def monai_hd95():
        return compute_hausdorff_distance(tp, tt, include_background=True, percentile=95, spacing=s)

    def monai_assd():
        return compute_average_surface_distance(tp, tt, include_background=True, symmetric=True, spacing=s)

    tools: dict = {
        "hd95": {
            "medseg hd95 (max of directed)": lambda: ms_hd95(p, t, s),
            "MONAI compute_hausdorff_distance(percentile=95)": monai_hd95,
            "medseg hd95(combine='pooled')": lambda: ms_hd95(p, t, s, combine="pooled"),
        },
        "assd": {
            "medseg assd": lambda: ms_assd(p, t, s),
            "MONAI compute_average_surface_distance(symmetric)": monai_assd,
        },
        "hd, hd95, assd, nsd in one call": {
            "medseg surface_metrics (hd95 shown)": lambda: surface_metrics(p, t, s)["hd95"],
        },
    }
    if medpy:
        from medpy.metric import binary as mp

        tools["hd95"]["medpy hd95 (pooled)"] = lambda: mp.hd95(p, t, voxelspacing=s)
        tools["assd"]["medpy assd"] = lambda: mp.assd(p, t, voxelspacing=s)
    if calibrate:
        for method in ("grid", "kdtree", "edt"):
            tools["hd95"][f"medseg method={method!r}"] = lambda m=method: surface_metrics(p, t, s, method=m)[
                "hd95"
            ]
    return tools


def _time_case(tools: dict, repeats: int, is_3d: bool) -> tuple[dict, dict, dict]:
    """Interleaved repeats: every tool once per repeat, in an order rotated each repeat."""
    flat = [(m, n, fn) for m, group in tools.items() for n, fn in group.items()]
    wall: dict = {(m, n): [] for m, n, _ in flat}
    cpu: dict = {(m, n): [] for m, n, _ in flat}
    values: dict = {}
    for r in range(repeats + 1):
        order = flat[r % len(flat) :] + flat[: r % len(flat)]  # rotate: no tool always first
        for m, n, fn in order:
            slow = n.startswith("medpy") or "edt" in n
            if r > 1 and slow and is_3d:
                continue  # medpy / EDT on 3D take seconds: one timed call is enough
            w, c, v = _time(fn)
            if r == 0:
                values[(m, n)] = v  # first call: warm-up, value check
            else:
                wall[(m, n)].append(w)
                cpu[(m, n)].append(c)
    return values, wall, cpu


def run(
    sizes: list[str], kinds: list[str], repeats_2d: int, repeats_3d: int, calibrate: bool, medpy: bool
) -> dict:
    import monai
    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)  # MONAI's torch ops get one thread, like medseg and medpy (fair on a shared CPU)
    versions = {"monai": monai.__version__, "torch": torch.__version__, "numpy": np.__version__}
    versions["scipy"] = __import__("scipy").__version__
    if medpy:
        versions["medpy"] = __import__("medpy").__version__
    results: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()}-core CPU, shared",
        "load_average_start": list(os.getloadavg()),
        "versions": versions,
        "cases": {},
    }
    for key in sizes:
        size_label, shape, spacing = SIZES[key]
        for kind in kinds:
            label = f"{size_label}, {kind} prediction"
            pred, target = make_pair(shape, seed=0, kind=kind)
            # medpy takes seconds per 3D call (two full-volume distance transforms): 2D only
            tools = _tools(pred, target, spacing, calibrate, medpy and len(shape) == 2)
            repeats = repeats_2d if len(shape) == 2 else repeats_3d
            values, wall, cpu = _time_case(tools, repeats, len(shape) == 3)
            out: dict = {
                "shape": list(shape),
                "spacing": list(spacing),
                "dice": float(2 * (pred & target).sum() / (pred.sum() + target.sum())),
                "metrics": {},
            }
            for m, group in tools.items():
                out["metrics"][m] = {
                    n: {
                        "value": values[(m, n)],
                        "wall_s": statistics.median(wall[(m, n)]),
                        "cpu_s": statistics.median(cpu[(m, n)]),
                        "cpu_min_s": min(cpu[(m, n)]),
                        "cpu_max_s": max(cpu[(m, n)]),
                        "n": len(wall[(m, n)]),
                    }
                    for n in group
                }
            results["cases"][label] = out
            print(to_markdown({"cases": {label: out}}), flush=True)
    results["load_average_end"] = list(os.getloadavg())
    return results


def _medpy_pairs(p: np.ndarray, t: np.ndarray, sp: tuple[float, ...]) -> list:
    """(medpy value, medseg value) for every metric both libraries have."""
    from medpy.metric import binary as mp

    from medseg import metrics as M

    return [
        (mp.hd95(p, t, voxelspacing=sp), M.hd95(p, t, sp, combine="pooled")),
        (mp.assd(p, t, voxelspacing=sp), M.assd(p, t, sp)),
        (mp.hd(p, t, voxelspacing=sp), M.hausdorff(p, t, sp)),
        (mp.dc(p, t), M.dice(p, t)),
        (mp.jc(p, t), M.iou(p, t)),
        (mp.recall(p, t), M.sensitivity(p, t)),
        (mp.precision(p, t), M.precision(p, t)),
        (mp.specificity(p, t), M.specificity(p, t)),
    ]


def check_values(n: int = 30, medpy: bool = True) -> str:
    """Every metric against MONAI and medpy on small random masks (2D and 3D, random spacing)."""
    import torch
    from monai.metrics import (
        compute_average_surface_distance,
        compute_hausdorff_distance,
        compute_surface_dice,
    )

    from medseg import metrics as M

    rng = np.random.default_rng(7)
    worst = 0.0
    for i in range(n):
        shape = [(20, 23), (9, 11, 10), (64, 64)][i % 3]
        p = rng.random(shape) < rng.uniform(0.05, 0.5)
        t = rng.random(shape) < rng.uniform(0.05, 0.5)
        p.flat[0] = t.flat[-1] = True
        sp = tuple(float(x) for x in rng.uniform(0.3, 3, len(shape)))
        tol = float(rng.uniform(0.5, 3))
        tp, tt = torch.from_numpy(p)[None, None], torch.from_numpy(t)[None, None]
        kw = {"include_background": True, "spacing": sp}
        pairs = [
            (compute_hausdorff_distance(tp, tt, percentile=95, **kw), M.hd95(p, t, sp)),
            (compute_hausdorff_distance(tp, tt, **kw), M.hausdorff(p, t, sp)),
            (compute_average_surface_distance(tp, tt, symmetric=True, **kw), M.assd(p, t, sp)),
            (compute_surface_dice(tp, tt, [tol], **kw), M.nsd(p, t, tol, sp)),
        ]
        if medpy:
            pairs += _medpy_pairs(p, t, sp)
        for ref, got in pairs:
            ref = float(ref)
            rel = abs(ref - got) / max(1.0, abs(ref))
            if rel > 1e-5:
                raise AssertionError(f"pair {i}: peer {ref} vs medseg {got}")
            worst = max(worst, rel)
    peers = "MONAI hd/hd95/assd/nsd" + (
        " and medpy hd/hd95(pooled)/assd/dc/jc/recall/precision/specificity" if medpy else ""
    )
    return (
        f"value check: {n} random 2D/3D pairs with random spacing, {peers}: largest relative "
        f"difference {worst:.1e} (MONAI returns float32)"
    )


def to_markdown(res: dict) -> str:
    lines = []
    for label, case in res["cases"].items():
        mon = {
            m: next((r for n, r in rows.items() if n.startswith("MONAI")), None)
            for m, rows in case["metrics"].items()
        }
        ref_hd = mon["hd95"]
        lines.append(f"\n**{label}** (spacing {case['spacing']} mm, Dice {case['dice']:.3f})\n")
        lines.append(
            "| metric | tool | value (mm) | CPU ms (min-max) | wall ms | MONAI CPU / this | MONAI wall / this |"
        )
        lines.append("|---|---|---:|---:|---:|---:|---:|")
        for m, rows in case["metrics"].items():
            base = mon[m] or ref_hd
            for n, r in rows.items():
                spread = f"{1000 * r['cpu_min_s']:.1f}-{1000 * r['cpu_max_s']:.1f}"
                lines.append(
                    f"| {m} | {n} | {r['value']:.6f} | {1000 * r['cpu_s']:.1f} ({spread}) "
                    f"| {1000 * r['wall_s']:.1f} | {base['cpu_s'] / r['cpu_s']:.1f}x "
                    f"| {base['wall_s'] / r['wall_s']:.1f}x |"
                )
    return "\n".join(lines)


def summary_markdown(res: dict, target: float = 5.0) -> str:
    """One line per case: medseg against MONAI for HD95 and ASSD (CPU-time ratios, value agreement)."""
    lines = [
        "| case | Dice | HD95 medseg / MONAI CPU ms | HD95 speed-up | ASSD medseg / MONAI CPU ms "
        f"| ASSD speed-up | largest value difference | >= {target:g}x |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for label, case in res["cases"].items():
        cells, ok, worst = [], True, 0.0
        for metric, ours in (("hd95", "medseg hd95 (max of directed)"), ("assd", "medseg assd")):
            rows = case["metrics"][metric]
            mon = next(r for n, r in rows.items() if n.startswith("MONAI"))
            me = rows[ours]
            ratio = mon["cpu_s"] / me["cpu_s"]
            ok &= ratio >= target
            worst = max(worst, abs(me["value"] - mon["value"]) / max(1.0, abs(mon["value"])))
            cells += [f"{1000 * me['cpu_s']:.1f} / {1000 * mon['cpu_s']:.1f}", f"{ratio:.1f}x"]
        lines.append(
            f"| {label} | {case['dice']:.2f} | {' | '.join(cells)} | {worst:.1e} | {'yes' if ok else 'no'} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2d256,2d512,3d64,3d128", help=f"comma list of {sorted(SIZES)}")
    ap.add_argument("--kinds", default="typical,hard,dissimilar")
    ap.add_argument("--repeats-2d", type=int, default=9)
    ap.add_argument("--repeats-3d", type=int, default=3)
    ap.add_argument("--calibrate", action="store_true")
    ap.add_argument("--no-medpy", action="store_true", help="skip medpy (timed on 2D pairs only)")
    ap.add_argument("--no-check", action="store_true", help="skip the value check on random pairs")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    medpy = not args.no_medpy
    if not args.no_check:
        print(check_values(medpy=medpy), flush=True)
    sizes, kinds = args.sizes.split(","), args.kinds.split(",")
    res = run(sizes, kinds, args.repeats_2d, args.repeats_3d, args.calibrate, medpy)
    print(res["machine"], res["versions"], "load average", res["load_average_start"], res["load_average_end"])
    print(summary_markdown(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
