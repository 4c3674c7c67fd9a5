"""Loss zoo benchmark: forward+backward time and peak memory against smp, MONAI and plain CE.

Run with the benchmark environment (peers installed there, medseg importable):

    .venv-bench/bin/python bench/losses.py --repeats 7

Two shapes: multiclass logits [8, 4, 256, 256] and binary logits [8, 1, 512, 512]. Every case is
timed in the same process, the cases interleaved (one repeat = every case once, in a shuffled
order) so that the load of a shared machine spreads over all of them. The primary measure is the
process CPU time of one forward+backward with one torch thread (on a machine shared by other
jobs, wall-clock time mostly measures the others); medians are reported with the ratio to the
floor (plain torch cross-entropy / BCE-with-logits on the same tensors), and wall time too.
Peak memory is measured in a child process per shape with glibc's mmap threshold lowered, so
that every large tensor is its own mapping and the resident set tracks live tensors: the peak
resident set during one forward+backward (Linux ``VmHWM``, reset through ``clear_refs``) minus the
resident set before it.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

IGNORE = 255


def _peers():
    peers: dict[str, object] = {}
    try:
        import segmentation_models_pytorch.losses as smp_losses

        peers["smp"] = smp_losses
    except Exception as exc:  # noqa: BLE001 - report whatever stops the import
        print(f"# segmentation_models_pytorch unavailable: {exc!r}", file=sys.stderr)
    try:
        import monai.losses as monai_losses

        peers["monai"] = monai_losses
    except Exception as exc:  # noqa: BLE001
        print(f"# MONAI unavailable: {exc!r}", file=sys.stderr)
    return peers


def make_cases(
    shape: str, ignore_frac: float
) -> tuple[torch.Tensor, torch.Tensor, dict[str, tuple[str, Callable]]]:
    """Inputs and ``{case: (group, fn(x) -> loss)}`` for one shape."""
    from medseg.losses import build_loss

    g = torch.Generator().manual_seed(0)
    peers = _peers()
    smp = peers.get("smp")
    monai = peers.get("monai")
    cases: dict[str, tuple[str, Callable]] = {}
    if shape == "multiclass":
        x = torch.randn(8, 4, 256, 256, generator=g)
        y = torch.randint(0, 4, (8, 256, 256), generator=g)
        y_ign = y.clone()
        y_ign[:, : int(256 * ignore_frac)] = IGNORE
        y1 = y.unsqueeze(1)

        def ours(name, target=y, **kw):
            loss = build_loss(name, mode="multiclass", **kw)
            return lambda z: loss(z, target)

        cases["floor: F.cross_entropy"] = ("floor", lambda z: F.cross_entropy(z, y))
        cases["floor: F.cross_entropy, ignore_index"] = (
            "floor",
            lambda z: F.cross_entropy(z, y_ign, ignore_index=IGNORE),
        )
        cases["medseg ce"] = ("ce", ours("ce"))
        cases["medseg ce, ignore_index"] = ("ce", ours("ce", y_ign, ignore_index=IGNORE))
        cases["medseg dice"] = ("dice", ours("dice"))
        cases["medseg dice, ignore_index"] = ("dice", ours("dice", y_ign, ignore_index=IGNORE))
        cases["medseg iou"] = ("iou", ours("iou"))
        cases["medseg tversky"] = ("tversky", ours("tversky"))
        cases["medseg focal_tversky"] = ("focal_tversky", ours("focal_tversky"))
        cases["medseg focal"] = ("focal", ours("focal"))
        cases["medseg focal, ignore_index"] = ("focal", ours("focal", y_ign, ignore_index=IGNORE))
        cases["medseg dice_ce"] = ("dice_ce", ours("dice_ce"))
        cases["medseg dice_ce, ignore_index"] = ("dice_ce", ours("dice_ce", y_ign, ignore_index=IGNORE))
        cases["medseg combo"] = ("combo", ours("combo"))
        cases["medseg lovasz_softmax"] = ("lovasz_softmax", ours("lovasz_softmax"))
        cases["medseg lovasz_softmax, ignore_index"] = (
            "lovasz_softmax",
            ours("lovasz_softmax", y_ign, ignore_index=IGNORE),
        )
        if smp is not None:
            mc = "multiclass"
            for group, loss in [
                ("dice", smp.DiceLoss(mc)),
                ("iou", smp.JaccardLoss(mc)),
                ("tversky", smp.TverskyLoss(mc, alpha=0.5, beta=0.5)),
                ("focal_tversky", smp.TverskyLoss(mc, alpha=0.3, beta=0.7, gamma=0.75)),
                ("focal", smp.FocalLoss(mc)),
                ("lovasz_softmax", smp.LovaszLoss(mc)),
            ]:
                cases[f"smp {type(loss).__name__} ({group})"] = (group, lambda z, loss=loss: loss(z, y))
            dice_ign = smp.DiceLoss(mc, ignore_index=IGNORE)
            cases["smp DiceLoss (dice), ignore_index"] = ("dice", lambda z: dice_ign(z, y_ign))
            lov_ign = smp.LovaszLoss(mc, ignore_index=IGNORE)
            cases["smp LovaszLoss (lovasz_softmax), ignore_index"] = (
                "lovasz_softmax",
                lambda z: lov_ign(z, y_ign),
            )
        if monai is not None:
            kw = dict(softmax=True, to_onehot_y=True)
            for group, loss in [
                ("dice", monai.DiceLoss(**kw)),
                ("tversky", monai.TverskyLoss(alpha=0.5, beta=0.5, **kw)),
                ("focal", monai.FocalLoss(use_softmax=True, to_onehot_y=True)),
                ("dice_ce", monai.DiceCELoss(**kw)),
            ]:
                cases[f"monai {type(loss).__name__} ({group})"] = (group, lambda z, loss=loss: loss(z, y1))
        return x, y, cases

    x = torch.randn(8, 1, 512, 512, generator=g)
    y = torch.randint(0, 2, (8, 512, 512), generator=g)
    y_ign = y.clone()
    y_ign[:, : int(512 * ignore_frac)] = IGNORE
    y1 = y.unsqueeze(1)
    y1f = y1.float()

    def ours_b(name, target=y, **kw):
        loss = build_loss(name, mode="binary", **kw)
        return lambda z: loss(z, target)

    cases["floor: F.binary_cross_entropy_with_logits"] = (
        "floor",
        lambda z: F.binary_cross_entropy_with_logits(z, y1f),
    )
    cases["medseg bce"] = ("bce", ours_b("bce"))
    cases["medseg bce, ignore_index"] = ("bce", ours_b("bce", y_ign, ignore_index=IGNORE))
    cases["medseg dice"] = ("dice", ours_b("dice"))
    cases["medseg dice, ignore_index"] = ("dice", ours_b("dice", y_ign, ignore_index=IGNORE))
    cases["medseg dice, float target"] = ("dice", ours_b("dice", y1f))
    cases["medseg iou"] = ("iou", ours_b("iou"))
    cases["medseg tversky"] = ("tversky", ours_b("tversky"))
    cases["medseg focal_tversky"] = ("focal_tversky", ours_b("focal_tversky"))
    cases["medseg focal"] = ("focal", ours_b("focal", alpha=0.25))
    cases["medseg bce_dice"] = ("bce_dice", ours_b("bce_dice"))
    cases["medseg bce_dice, ignore_index"] = ("bce_dice", ours_b("bce_dice", y_ign, ignore_index=IGNORE))
    cases["medseg bce_dice, float target"] = ("bce_dice", ours_b("bce_dice", y1f))
    cases["medseg combo"] = ("combo", ours_b("combo"))
    cases["medseg lovasz_hinge"] = ("lovasz_hinge", ours_b("lovasz_hinge"))
    cases["medseg lovasz_hinge, ignore_index"] = (
        "lovasz_hinge",
        ours_b("lovasz_hinge", y_ign, ignore_index=IGNORE),
    )
    if smp is not None:
        bm = "binary"
        for group, loss in [
            ("bce", smp.SoftBCEWithLogitsLoss()),
            ("dice", smp.DiceLoss(bm)),
            ("iou", smp.JaccardLoss(bm)),
            ("tversky", smp.TverskyLoss(bm, alpha=0.5, beta=0.5)),
            ("focal_tversky", smp.TverskyLoss(bm, alpha=0.3, beta=0.7, gamma=0.75)),
            ("focal", smp.FocalLoss(bm, alpha=0.25)),
            ("lovasz_hinge", smp.LovaszLoss(bm)),
        ]:
            tgt = y1f if group == "bce" else y1
            cases[f"smp {type(loss).__name__} ({group})"] = (
                group,
                lambda z, loss=loss, tgt=tgt: loss(z, tgt),
            )
        lov_ign = smp.LovaszLoss(bm, ignore_index=IGNORE)
        y1_ign = y_ign.unsqueeze(1)
        cases["smp LovaszLoss (lovasz_hinge), ignore_index"] = ("lovasz_hinge", lambda z: lov_ign(z, y1_ign))
    if monai is not None:
        for group, loss in [
            ("dice", monai.DiceLoss(sigmoid=True)),
            ("tversky", monai.TverskyLoss(sigmoid=True, alpha=0.5, beta=0.5)),
            ("focal", monai.FocalLoss(alpha=0.25)),
            ("bce_dice", monai.DiceCELoss(sigmoid=True)),
        ]:
            cases[f"monai {type(loss).__name__} ({group})"] = (group, lambda z, loss=loss: loss(z, y1f))
    return x, y, cases


def run_once(fn: Callable, x: torch.Tensor) -> tuple[float, float]:
    """(process CPU seconds, wall seconds) of one forward+backward."""
    z = x.detach().requires_grad_(True)
    c0, t0 = time.process_time(), time.perf_counter()
    fn(z).backward()
    return time.process_time() - c0, time.perf_counter() - t0


def time_shape(shape: str, repeats: int, ignore_frac: float) -> dict[str, dict]:
    x, _, cases = make_cases(shape, ignore_frac)
    names = list(cases)
    for name in names:  # warm-up, and a check that every case runs
        run_once(cases[name][1], x)
    cpu: dict[str, list[float]] = {n: [] for n in names}
    wall: dict[str, list[float]] = {n: [] for n in names}
    rng = random.Random(0)
    for _ in range(repeats):
        order = names[:]
        rng.shuffle(order)
        for name in order:
            c, w = run_once(cases[name][1], x)
            cpu[name].append(c)
            wall[name].append(w)
    return {
        n: {
            "group": cases[n][0],
            "cpu_median_ms": 1e3 * statistics.median(cpu[n]),
            "cpu_min_ms": 1e3 * min(cpu[n]),
            "wall_median_ms": 1e3 * statistics.median(wall[n]),
        }
        for n in names
    }


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_shape(shape: str, ignore_frac: float) -> dict[str, float]:
    """Peak extra resident memory (MiB) of one forward+backward per case (run in a child process)."""
    libc = ctypes.CDLL("libc.so.6")
    x, _, cases = make_cases(shape, ignore_frac)
    out = {}
    for name, (_, fn) in cases.items():
        run_once(fn, x)  # warm-up: lazy imports, caches
        z = x.detach().requires_grad_(True)
        libc.malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident set
        before = _rss_kib("VmRSS")
        fn(z).backward()
        out[name] = (_rss_kib("VmHWM") - before) / 1024
        del z
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--shapes", nargs="+", default=["multiclass", "binary"])
    parser.add_argument(
        "--ignore-frac", type=float, default=0.05, help="rows set to ignore_index in '... ignore_index' cases"
    )
    parser.add_argument("--json", help="also write the raw numbers here")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: CPU time = work)")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        print(json.dumps(memory_shape(args.memory_child, args.ignore_frac)))
        return
    results = {}
    for shape in args.shapes:
        timing = time_shape(shape, args.repeats, args.ignore_frac)
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
        child = subprocess.run(
            [sys.executable, __file__, "--memory-child", shape, "--ignore-frac", str(args.ignore_frac)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        memory = json.loads(child.stdout.strip().splitlines()[-1])
        floor = next(v["cpu_median_ms"] for n, v in timing.items() if v["group"] == "floor")
        print(
            f"\n### {shape}: logits {'[8, 4, 256, 256]' if shape == 'multiclass' else '[8, 1, 512, 512]'}\n"
        )
        print(
            "| loss | implementation | CPU ms (median) | CPU ms (min) | × floor | wall ms (median) | peak extra MiB |"
        )
        print("|---|---|---:|---:|---:|---:|---:|")
        order = sorted(
            timing,
            key=lambda n: (timing[n]["group"] != "floor", timing[n]["group"], not n.startswith("medseg"), n),
        )
        for name in order:
            v = timing[name]
            print(
                f"| {v['group']} | {name} | {v['cpu_median_ms']:.1f} | {v['cpu_min_ms']:.1f} | "
                f"{v['cpu_median_ms'] / floor:.2f} | {v['wall_median_ms']:.1f} | {memory.get(name, float('nan')):.0f} |"
            )
        results[shape] = {"timing": timing, "memory_mib": memory}
    print(f"\ntorch {torch.__version__}, threads {torch.get_num_threads()}, repeats {args.repeats}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
