"""medseg ``unet3d`` against nnU-Net's own network package (dynamic-network-architectures
``PlainConvUNet``) at the same topology: training step (forward + Dice-free CE + backward +
SGD) and inference time, peak memory, parameter count.

dynamic-network-architectures' pip metadata would replace torch 2.13.0+cpu, so it is not a
medseg dependency; run this in the project's nnU-Net venv (torch 2.13.0+cpu, installed with
nnunetv2) with medseg on PYTHONPATH:

    BENCH_EXTRA_SITE=.venv/lib/python3.11/site-packages PYTHONPATH=. \
        .venv-nnunet/bin/python -m bench.unet3d_vs_dna --repeats 5 --steps 2

(``BENCH_PATCH=16,64,64`` for a smaller patch; ``BENCH_EXTRA_SITE``: see augment_3d_peers.py.)

Each contender lives in its own process (``bench.common.Worker``), one runs at a time, the order
rotates per repeat; medians over repeats with min-max.
"""

from __future__ import annotations

import argparse
import json
import os

import torch
from torch import nn

from bench.common import Timing, Worker, interleave, machine_summary

if os.environ.get("BENCH_EXTRA_SITE"):  # medseg's deps missing from the nnU-Net venv, searched last
    import sys

    sys.path.append(os.environ["BENCH_EXTRA_SITE"])

PATCH = (16, 128, 128)
SPACING = (6.0, 1.5, 1.5)  # ACDC-like thick slices: in-plane pooling first


def _topology():
    from medseg.models.unet3d import plan_topology

    return plan_topology(_patch(), SPACING)


def _patch() -> tuple[int, ...]:
    """The patch (``BENCH_PATCH=16,64,64`` overrides the default; read in every worker)."""
    text = os.environ.get("BENCH_PATCH")
    return tuple(int(v) for v in text.split(",")) if text else PATCH


def build_medseg(classes: int) -> nn.Module:
    from medseg.models import build_model

    k, s = _topology()
    return build_model("unet3d", 1, classes, kernel_sizes=k, strides=s, base_width=32, max_width=320)


def build_dna(classes: int) -> nn.Module:
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    k, s = _topology()
    widths = [min(32 * 2**i, 320) for i in range(len(k))]
    return PlainConvUNet(
        1,
        len(k),
        widths,
        nn.Conv3d,
        k,
        s,
        2,
        classes,
        2,
        conv_bias=False,  # medseg: no bias before a norm
        norm_op=nn.InstanceNorm3d,
        norm_op_kwargs={"eps": 1e-5, "affine": True},
        nonlin=nn.LeakyReLU,
        nonlin_kwargs={"inplace": True},
        deep_supervision=False,
    )


def make_step(which: str, mode: str, batch: int, threads: int):
    """A zero-argument step of ``which`` (medseg | dna) in ``mode`` (train | infer)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = (build_medseg if which == "medseg" else build_dna)(4)
    x = torch.randn(batch, 1, *_patch())
    y = torch.randint(0, 4, (batch, *_patch()))
    if mode == "infer":
        model.eval()

        def infer():
            with torch.no_grad():
                model(x)

        return infer
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.99, nesterov=True)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    params = {
        w: sum(p.numel() for p in b(4).parameters())
        for w, b in (("medseg", build_medseg), ("dna", build_dna))
    }
    print(machine_summary())
    print(f"patch {_patch()}, batch {args.batch}, topology {_topology()}, parameters {params}")
    results = {}
    for mode in ("train", "infer"):
        workers = [
            Worker(
                f"{w} {mode}",
                make_step,
                {"which": w, "mode": mode, "batch": args.batch, "threads": args.threads},
            )
            for w in ("medseg", "dna")
        ]
        timings: dict[str, Timing] = interleave(workers, args.repeats, args.steps)
        for w in workers:
            w.stop()
        for t in timings.values():
            results[t.name] = {
                "median_s": t.median,
                "min_s": min(t.seconds),
                "max_s": max(t.seconds),
                "peak_rss_mb": t.peak_rss_mb,
            }
    print("| contender | s/step median [min-max] | peak RSS MiB |\n|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['median_s']:.3f} [{r['min_s']:.3f}-{r['max_s']:.3f}] | {r['peak_rss_mb']:.0f} |"
        )
    for mode in ("train", "infer"):
        ratio = results[f"dna {mode}"]["median_s"] / results[f"medseg {mode}"]["median_s"]
        print(f"{mode}: medseg is {ratio:.2f}x the speed of dynamic-network-architectures")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"params": params, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
