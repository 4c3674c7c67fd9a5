"""U-Net speed: medseg's U-Net against segmentation_models_pytorch ``Unet`` and MONAI ``BasicUNet``.

Training (forward + backward + AdamW step, BCE-with-logits loss) and inference (``eval()``,
``torch.no_grad()``) throughput in images/s, at similar parameter counts, same input size and batch,
all contenders measured in one run with interleaved repeats (see ``bench/common.py``).

Run in the bench environment (peers are never needed by medseg itself)::

    bash bench/setup_env.sh                       # once: creates .venv-bench
    .venv-bench/bin/python -m bench.unet --scale small --threads 1   # docs/bench/unet.md main table
    .venv-bench/bin/python -m bench.unet          # ~24 M parameters, 4 x 3 x 256 x 256 (slow here)
    .venv-bench/bin/python -m bench.unet --models medseg --variants base,cl,fuse,bf16 --modes infer

Contenders (``--scale``; parameter counts for 3 input channels, 1 output channel):

=====  =================================  =====================================  ============================
scale  medseg ``unet`` (depth 4, BN)      smp ``Unet`` (encoder_weights=None)    MONAI ``BasicUNet`` features
=====  =================================  =====================================  ============================
large  base_width 56: 23.76 M             resnet34 encoder: 24.44 M              (112,112,224,448,896,112): 24.19 M
small  base_width 16: 1.94 M              tu-mobilenetv3_small_100: 1.96 M       (32,32,64,128,256,32) (default): 1.98 M
=====  =================================  =====================================  ============================

``--variants`` (applied to medseg only; ``base`` is the model as built):
``cl`` channels_last memory format for model and input; ``fuse`` (inference) folds every
BatchNorm2d that follows a Conv2d inside an ``nn.Sequential`` into the convolution;
``bf16`` CPU autocast to bfloat16; ``fusedopt`` (training) ``AdamW(fused=True)``, one kernel per
parameter instead of a dozen; ``t1`` one intra-op thread; combine with ``+`` (``cl+fuse``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/unet.py` as well as `python -m bench.unet`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    MALLOC_ENVS,
    Timing,
    Worker,
    emit_result,
    interleave,
    log_stderr,
    machine_summary,
    profile_table,
)

SCALES: dict[str, dict[str, dict[str, Any]]] = {
    "large": {
        "medseg": {"base_width": 56},
        "smp": {"encoder_name": "resnet34"},
        "monai": {"features": (112, 112, 224, 448, 896, 112)},
    },
    "small": {
        "medseg": {"base_width": 16},
        "smp": {"encoder_name": "tu-mobilenetv3_small_100", "decoder_channels": (128, 64, 32, 16, 16)},
        "monai": {"features": (32, 32, 64, 128, 256, 32)},
    },
}


def build(model: str, in_channels: int, options: dict[str, Any]):
    """One contender with random initialisation and a single (binary) output channel."""
    if model == "medseg":
        from medseg.models import build_model

        return build_model("unet", in_channels, 1, depth=4, norm="batch", **options)
    if model == "smp":
        import segmentation_models_pytorch as smp

        return smp.Unet(encoder_weights=None, in_channels=in_channels, classes=1, **options)
    if model == "monai":
        from monai.networks.nets import BasicUNet

        return BasicUNet(spatial_dims=2, in_channels=in_channels, out_channels=1, **options)
    raise ValueError(f"unknown model {model!r}; choose medseg, smp or monai")


def fuse_conv_bn(module):
    """Fold each BatchNorm2d that directly follows a Conv2d in an nn.Sequential into the conv
    (eval only; the BN becomes Identity). Output is unchanged up to float rounding."""
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                seq._modules[a] = fuse_conv_bn_eval(conv, bn)
                seq._modules[b] = nn.Identity()
    return module


def make_step(
    model: str,
    mode: str,
    options: dict[str, Any],
    variant: str,
    batch: int,
    size: int,
    in_channels: int,
    seed: int = 0,
):
    """Runs in a worker process: build the contender and return its zero-argument step."""
    import contextlib

    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    flags = set(filter(None, variant.split("+"))) - {"base"}
    unknown = flags - {"cl", "fuse", "bf16", "fusedopt", "t1"}
    if unknown:
        raise ValueError(f"unknown variant flag(s) {sorted(unknown)}; use base, cl, fuse, bf16, fusedopt, t1")
    if "t1" in flags:
        torch.set_num_threads(1)
    net = build(model, in_channels, options)
    x = torch.randn(batch, in_channels, size, size)
    y = (torch.rand(batch, 1, size, size) > 0.5).float()
    if "cl" in flags:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def autocast():
        if "bf16" in flags:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    if mode == "train":
        if "fuse" in flags:
            raise ValueError("variant 'fuse' is for inference only")
        net.train()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3, fused=True if "fusedopt" in flags else None)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            with autocast():
                logits = net(x)
            loss = F.binary_cross_entropy_with_logits(logits.float(), y)
            loss.backward()
            opt.step()

        return step
    if mode == "infer":
        net.eval()
        if "fuse" in flags:
            fuse_conv_bn(net)

        def step() -> None:
            with torch.no_grad(), autocast():
                net(x)

        return step
    raise ValueError(f"unknown mode {mode!r}; choose train or infer")


def skip(mode: str, variant: str) -> bool:
    """Variant flags that only make sense in one mode."""
    flags = set(variant.split("+"))
    return (mode == "train" and "fuse" in flags) or (mode == "infer" and "fusedopt" in flags)


def describe(model: str, in_channels: int, options: dict[str, Any], size: int) -> dict[str, float]:
    """Parameter count and forward GFLOP per image (torch's FLOP counter: 2 x multiply-adds)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    net = build(model, in_channels, options).eval()
    params = sum(p.numel() for p in net.parameters())
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        net(torch.zeros(1, in_channels, size, size))
    return {"params_M": params / 1e6, "gflop_per_image": fc.get_total_flops() / 1e9}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", choices=sorted(SCALES), default="large")
    p.add_argument("--models", default="medseg,smp,monai")
    p.add_argument("--modes", default="train,infer")
    p.add_argument("--variants", default="base", help="medseg variants, comma separated (see module doc)")
    p.add_argument("--malloc", default="default,tuned", help="glibc malloc settings to compare")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--in-channels", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=2, help="steps per repeat (one timing sample)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="intra-op threads of every contender (OMP_NUM_THREADS); 0 = torch's default",
    )
    p.add_argument("--json", type=Path, help="write raw results here")
    p.add_argument(
        "--profile",
        action="store_true",
        help="instead of timing: torch.profiler table of one step per contender (in this process)",
    )
    args = p.parse_args(argv)

    models = args.models.split(",")
    modes = args.modes.split(",")
    mallocs = args.malloc.split(",")
    for m in mallocs:
        if m not in MALLOC_ENVS:
            p.error(f"--malloc {m!r}: choose from {', '.join(MALLOC_ENVS)}")
    variants = args.variants.split(",")
    scale = SCALES[args.scale]

    if args.profile:
        for mode in modes:
            for m in models:
                for v in variants if m == "medseg" else ["base"]:
                    if skip(mode, v):
                        continue
                    step = make_step(m, mode, scale[m], v, args.batch, args.size, args.in_channels)
                    for _ in range(args.warmup):
                        step()
                    print(f"\n### {m}[{v}] {mode} (malloc as in this process's environment)\n")
                    print(profile_table(step, steps=args.steps))
        return {}

    info = {m: describe(m, args.in_channels, scale[m], args.size) for m in models}
    workers = []
    for mode in modes:
        for m in models:
            for v in variants if m == "medseg" else ["base"]:
                if skip(mode, v):
                    continue
                for mal in mallocs:
                    name = f"{m}[{v}] {mode} malloc={mal}"
                    kwargs = dict(
                        model=m,
                        mode=mode,
                        options=scale[m],
                        variant=v,
                        batch=args.batch,
                        size=args.size,
                        in_channels=args.in_channels,
                    )
                    env = dict(MALLOC_ENVS[mal])
                    if args.threads:
                        env["OMP_NUM_THREADS"] = str(args.threads)
                    workers.append(Worker(name, make_step, kwargs, env=env, warmup=args.warmup))
    log_stderr(f"{len(workers)} contenders, {args.repeats} repeats x {args.steps} steps; {machine_summary()}")
    try:
        timings: dict[str, Timing] = interleave(workers, args.repeats, args.steps, log=log_stderr)
    finally:
        for w in workers:
            w.stop()

    rows = []
    for w in workers:
        t = timings[w.name]
        model, mode = w._args[1]["model"], w._args[1]["mode"]
        rows.append(
            {
                "name": w.name,
                "model": model,
                "mode": mode,
                "variant": w._args[1]["variant"],
                "malloc": w.name.rsplit("=", 1)[1],
                **info[model],
                **t.fields(args.batch),
                "minflt_per_step": sorted(t.minflt)[len(t.minflt) // 2],
            }
        )
    return emit_result(args, rows, markdown)


def markdown(result: dict) -> str:
    """Table of throughput, with ratios to medseg (same mode and malloc setting)."""
    a = result["args"]
    lines = [
        f"scale {a['scale']}, batch {a['batch']}, input {a['in_channels']}x{a['size']}x{a['size']}, "
        f"{a['repeats']} interleaved repeats x {a['steps']} steps, contender threads "
        f"{a.get('threads') or 'default'}; driver: {result['machine']}",
        "",
        "| contender | params (M) | GFLOP/img (fwd) | img/s (median) | s/step min-max | "
        "x medseg[base] | peak RSS (MiB) | minor faults/step |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ref = {
        (r["mode"], r["malloc"]): r["img_per_s"]
        for r in result["rows"]
        if r["model"] == "medseg" and r["variant"] == "base"
    }
    for r in result["rows"]:
        base = ref.get((r["mode"], r["malloc"]))
        ratio = f"{r['img_per_s'] / base:.2f}" if base else "-"
        lines.append(
            f"| {r['name']} | {r['params_M']:.2f} | {r['gflop_per_image']:.1f} | {r['img_per_s']:.2f} | "
            f"{r['s_per_step_min']:.2f}-{r['s_per_step_max']:.2f} | {ratio} | {r['peak_rss_mb']:.0f} | "
            f"{r['minflt_per_step']:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
