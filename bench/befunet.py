"""BEFUnet speed: medseg's ``befunet`` against the official implementation (Omid-Nejati/BEFUnet).

Training (forward + backward + SGD step, the official trainer's optimiser; loss CE + soft Dice,
plus the per-stage edge BCE for medseg, which trains with edge supervision as the paper does)
and inference (``eval()``, ``torch.no_grad()``) throughput, same input and batch, every
contender in its own worker process, measured in one run with interleaved repeats
(``bench/common.py``). Also prints parameters and forward GFLOP (torch FLOP counter) per image.

The official code is read from a local copy that is never committed::

    # fetched snapshot -> bench/_peers/BEFUnet (git-ignored), or pass --official PATH
    git --git-dir=<mirror> archive HEAD | tar -x -C bench/_peers/BEFUnet
    .venv-bench/bin/python -m bench.befunet --official bench/_peers/BEFUnet

How the official model is built without network access: its configuration values
(``configs/BEFUnet_configs.py``: Swin-T 96/2-2-6-2, PiDiNet-small "carv4" 30-60-120-120,
DLF depth [1, 2, 0], heads (6, 12), MLP ratios (2, 2, 1)) are passed as a namespace (the
config module itself downloads weights with ``wget`` on import); the ImageNet Swin file it
insists on loading is replaced by a randomly initialised state dict of its own Swin class
(written to a temporary file), the PiDiNet weights come from the repository. Speed does not
depend on the weight values. Its ``utils.py`` imports medpy/SimpleITK for evaluation only.

Contenders (``--models``): ``befunet`` (the paper model), ``befunet_small``, ``befunet_matched``
(``befunet`` with ``design="matched"``: the official code's work, DLF outputs used), ``official`` (as published:
its DLF self-attention outputs ``outs_b`` are computed and discarded, so their backward pass is
never paid) and ``official_patched`` (the same code, its DLF self-attention outputs returned instead
of its inputs: forward hooks on the official modules, the official code itself is unchanged). Each
medseg model is compared with its equal-work reference: ``befunet_matched`` with
``official_patched``, the others with ``official``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import MALLOC_ENVS, Timing, Worker, emit_result, interleave, log_stderr, machine_summary  # noqa: E402

DEFAULT_OFFICIAL = Path(__file__).resolve().parent / "_peers" / "BEFUnet"
OFFICIAL_MODELS = ("official", "official_patched")
# contenders that are medseg models with options: name -> (registered model, options)
MEDSEG_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "befunet_matched": ("befunet", {"design": "matched"})
}
# the equal-work reference of each contender (the rest: "official", the code as published)
REFERENCE = {"befunet_matched": "official_patched", "official_patched": "official_patched"}


def reference_of(model: str) -> str:
    return REFERENCE.get(model, "official")


def use_dlf_outputs(net) -> int:
    """Make the official model use its DLF self-attention outputs (``outs_b``), which its
    ``MultiScaleBlock.forward`` computes and then drops, returning its inputs ``outs`` instead.

    A forward hook on each branch's self-attention stack records its output, and a forward hook
    on the ``MultiScaleBlock`` returns those outputs in place of ``outs`` (a hook's return value
    replaces the module's output). The official code is unchanged; the work is the same as
    published plus the backward pass through the self-attention blocks. Returns the number of
    patched blocks."""
    patched = 0
    for block in net.All2Cross.blocks:  # official MultiScaleBlock(s)
        seen: list = []
        for branch in block.blocks:
            branch.register_forward_hook(lambda m, inp, out, seen=seen: seen.append(out))

        def used(m, inp, out, seen=seen):
            if len(seen) != len(out):
                raise RuntimeError(f"expected {len(out)} DLF branch outputs, recorded {len(seen)}")
            result = list(seen)
            seen.clear()
            return result

        block.register_forward_hook(used)
        patched += 1
    return patched


def build_official(path: str | Path, img_size: int, num_classes: int):
    """The official ``BEFUnet`` (random Swin weights, repository PiDiNet weights)."""
    import tempfile

    import torch

    path = Path(path).resolve()
    if not (path / "models" / "BEFUnet.py").is_file():
        raise FileNotFoundError(f"no official BEFUnet checkout at {path} (see bench/befunet.py docstring)")
    sys.path.insert(0, str(path))
    from models.BEFUnet import BEFUnet  # noqa: PLC0415 - the official package
    from models.Encoder import SwinTransformer  # official Swin class (downsample=None layers)

    swin = SwinTransformer(img_size)
    state = dict(swin.state_dict())
    for i, d in enumerate((96, 192, 384)):  # the patch-merging weights it copies from the file
        state[f"layers.{i}.downsample.reduction.weight"] = torch.randn(2 * d, 4 * d) * 0.02
        state[f"layers.{i}.downsample.norm.weight"] = torch.ones(4 * d)
        state[f"layers.{i}.downsample.norm.bias"] = torch.zeros(4 * d)
    ckpt = Path(tempfile.mkdtemp()) / "swin_tiny_patch4_window7_224.pth"
    torch.save({"model": state}, ckpt)
    cfg = SimpleNamespace(
        swin_pyramid_fm=[96, 192, 384, 768],
        image_size=img_size,
        patch_size=4,
        num_classes=num_classes,
        swin_pretrained_path=str(ckpt),
        cnn_backbone="pidinet_small_converted",
        pdcs="carv4",
        cnn_pyramid_fm=[30, 60, 120, 120],
        pidinet_pretrained=False,
        PDC_pretrained_path=str(path / "weights" / "table5_pidinet-small.pth"),
        depth=[[1, 2, 0]],
        num_heads=(6, 12),
        mlp_ratio=(2.0, 2.0, 1.0),
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.0,
        qkv_bias=True,
        qk_scale=None,
        cross_pos_embed=True,
    )
    return BEFUnet(config=cfg, img_size=img_size, in_chans=3, n_classes=num_classes)


def build(model: str, img_size: int, num_classes: int, official: str, options: dict[str, Any]):
    if model in OFFICIAL_MODELS:
        net = build_official(official, img_size, num_classes)
        if model == "official_patched" and not use_dlf_outputs(net):
            raise RuntimeError("the official model has no DLF block to patch")
        return net
    from medseg.models import build_model

    model, preset = MEDSEG_VARIANTS.get(model, (model, {}))
    return build_model(model, 3, num_classes, img_size=img_size, **{**preset, **options})


def soft_dice(logits, target, num_classes: int):
    import torch.nn.functional as F

    prob = logits.softmax(1)
    onehot = F.one_hot(target, num_classes).permute(0, 3, 1, 2).float()
    inter = (prob * onehot).sum((0, 2, 3))
    return 1 - ((2 * inter + 1e-5) / (prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3)) + 1e-5)).mean()


def make_step(
    model: str,
    mode: str,
    batch: int,
    size: int,
    num_classes: int,
    official: str,
    options: dict[str, Any],
    variant: str = "base",
    seed: int = 0,
    precision: str = "fp32",
):
    """Runs in a worker process: build the contender and return its zero-argument step."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"unknown precision {precision!r}; choose fp32 or bf16")
    amp = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    net = build(model, size, num_classes, official, options)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, num_classes, (batch, size, size))
    # a cheap edge target for medseg's edge supervision: label changes between 4-neighbours
    edge = torch.zeros(batch, 1, size, size)
    edge[:, 0, 1:] += (y[:, 1:] != y[:, :-1]).float()
    edge[:, 0, :, 1:] += (y[:, :, 1:] != y[:, :, :-1]).float()
    edge = edge.clamp(max=1)
    if variant == "reparam":
        net.reparameterize()
    if mode == "train":
        net.train()
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            with amp:  # bf16 autocast (forward and loss) when precision == "bf16"
                if model in OFFICIAL_MODELS:
                    logits = net(x).float()
                    loss = F.cross_entropy(logits, y) + soft_dice(logits, y, num_classes)
                else:
                    logits, aux = net.forward_aux(x)
                    logits = logits.float()
                    loss = F.cross_entropy(logits, y) + soft_dice(logits, y, num_classes)
                    for e in aux.get("edges", []):  # the matched design has no edge heads
                        e = F.interpolate(e.float(), size=(size, size), mode="bilinear", align_corners=False)
                        loss = loss + F.binary_cross_entropy_with_logits(e, edge)
            loss.backward()
            opt.step()

        step.net = net  # type: ignore[attr-defined]  # for bench/befunet_profile.py
        return step
    if mode == "infer":
        net.eval()

        def step() -> None:
            with torch.no_grad(), amp:
                net(x)

        step.net = net  # type: ignore[attr-defined]
        return step
    raise ValueError(f"unknown mode {mode!r}; choose train or infer")


def describe(model: str, size: int, num_classes: int, official: str, options: dict[str, Any]) -> dict:
    """Parameters (M), forward GFLOP per image (2 x multiply-adds), parameters without gradient."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    net = build(model, size, num_classes, official, options)
    params = sum(p.numel() for p in net.parameters())
    net.eval()
    # the math backend decomposes attention into counted matmuls (fused kernels are not counted)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        net(torch.zeros(1, 3, size, size))
    # which parameters never influence the logits: backward from the logits only (eval: no drop-path)
    logits = net(torch.randn(1, 3, size, size))
    F.cross_entropy(logits, torch.zeros(1, size, size, dtype=torch.long)).backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.any()]
    dead_count = sum(p.numel() for n, p in net.named_parameters() if n in set(dead))
    return {
        "params_M": params / 1e6,
        "gflop_per_image": fc.get_total_flops() / 1e9,
        "no_grad_params_M": dead_count / 1e6,
        "no_grad_examples": dead[:6],
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--official", default=str(DEFAULT_OFFICIAL), help="checkout of Omid-Nejati/BEFUnet")
    p.add_argument(
        "--models",
        default="befunet,official",
        help="comma list: befunet, befunet_small, befunet_matched, official, official_patched",
    )
    p.add_argument("--infer-models", help="models timed in inference (default: --models)")
    p.add_argument("--modes", default="train,infer")
    p.add_argument("--malloc", default="default", help="glibc malloc settings: default, tuned")
    p.add_argument("--precision", default="fp32", help="comma list: fp32, bf16 (CPU autocast)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--size", type=int, default=224, help="the official code needs 224")
    p.add_argument("--classes", type=int, default=9)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--json", type=Path)
    p.add_argument("--no-describe", action="store_true", help="skip the parameter / FLOP / gradient census")
    p.add_argument("--describe-only", action="store_true", help="print the census of --models and stop")
    args = p.parse_args(argv)
    if args.describe_only:
        return census(args)

    models, modes, mallocs = args.models.split(","), args.modes.split(","), args.malloc.split(",")
    per_mode = {"train": models, "infer": (args.infer_models or args.models).split(",")}
    precisions = args.precision.split(",")
    nan = float("nan")
    info = {
        m: (
            {"params_M": nan, "gflop_per_image": nan}
            if args.no_describe
            else describe(m, args.size, args.classes, args.official, {})
        )
        for m in dict.fromkeys(per_mode["train"] + per_mode["infer"])
    }
    for m, d in info.items():
        log_stderr(f"{m}: {d}")
    workers = [
        Worker(
            f"{m} {mode} {prec} malloc={mal}",
            make_step,
            dict(
                model=m,
                mode=mode,
                batch=args.batch,
                size=args.size,
                num_classes=args.classes,
                official=args.official,
                options={},
                precision=prec,
            ),
            env=MALLOC_ENVS[mal],
            warmup=args.warmup,
        )
        for mode in modes
        for m in per_mode[mode]
        for prec in precisions
        for mal in mallocs
    ]
    load_before = os.getloadavg()
    log_stderr(f"{len(workers)} contenders, {args.repeats} repeats x {args.steps} steps; {machine_summary()}")
    try:
        timings: dict[str, Timing] = interleave(workers, args.repeats, args.steps, log=log_stderr)
    finally:
        for w in workers:
            w.stop()
    rows = []
    for w in workers:
        kw = w._args[1]
        rows.append(
            {
                "name": w.name,
                "model": kw["model"],
                "mode": kw["mode"],
                "malloc": w.name.rsplit("=", 1)[1],
                "precision": kw.get("precision", "fp32"),
                **info[kw["model"]],
                **timings[w.name].fields(args.batch),
            }
        )
    args.load_average = {"before": load_before, "after": os.getloadavg()}  # 1, 5, 15 min
    return emit_result(args, rows, markdown)


def census(args) -> dict:
    """Parameters, forward GFLOP and parameters without a gradient from the logits, per model."""
    result = {m: describe(m, args.size, args.classes, args.official, {}) for m in args.models.split(",")}
    print(
        "| model | parameters (M) | forward GFLOP / image | parameters with no gradient from the logits (M) |"
    )
    print("|---|---:|---:|---:|")
    for m, d in result.items():
        print(f"| {m} | {d['params_M']:.2f} | {d['gflop_per_image']:.2f} | {d['no_grad_params_M']:.4f} |")
    return result


def _ratios(row: dict, ref: dict | None) -> str:
    """Throughput of ``row`` over ``ref``: ratio of medians, and the median (min-max) of the
    per-repeat ratios (same repeat, adjacent in time: robust to load that drifts during a run)."""
    if ref is None:
        return "- | -"
    per = sorted(b / a for a, b in zip(row["samples"], ref["samples"]))
    return f"{row['img_per_s'] / ref['img_per_s']:.2f} | {statistics.median(per):.2f} ({per[0]:.2f}-{per[-1]:.2f})"


def markdown(result: dict) -> str:
    a = result["args"]
    described = not a.get("no_describe")  # without the census there is no size/FLOP column
    size_head, size_rule = ("| params (M) | GFLOP/img (fwd) ", "---:|---:|") if described else ("", "")
    load = a.get("load_average") or {}
    fmt = lambda v: "/".join(f"{x:.1f}" for x in v)  # noqa: E731
    lines = [
        f"Run: batch {a['batch']}, input 3x{a['size']}x{a['size']}, {a['classes']} classes, "
        f"{a['repeats']} interleaved repeats x {a['steps']} steps; {result['machine']}"
        + (
            f"; load average (1/5/15 min) {fmt(load['before'])} before, {fmt(load['after'])} after"
            if load
            else ""
        )
        + ".",
        "",
        f"| contender {size_head}| img/s (median) | s/step min-max | reference | x reference | "
        "x reference, per repeat | x official as published, fp32 | peak RSS (MiB) |",
        f"|---|{size_rule}---:|---:|---|---:|---:|---:|---:|",
    ]
    rows = {(r["model"], r["mode"], r.get("precision", "fp32"), r["malloc"]): r for r in result["rows"]}
    for r in result["rows"]:
        ref_model = reference_of(r["model"])
        ref = rows.get((ref_model, r["mode"], r.get("precision", "fp32"), r["malloc"]))
        published = rows.get(("official", r["mode"], "fp32", "default"))
        pub = f"{r['img_per_s'] / published['img_per_s']:.2f}" if published else "-"
        size = f"{r['params_M']:.2f} | {r['gflop_per_image']:.2f} | " if described else ""
        lines.append(
            f"| {r['name']} | {size}{r['img_per_s']:.2f} | "
            f"{r['s_per_step_min']:.2f}-{r['s_per_step_max']:.2f} | {ref_model} | {_ratios(r, ref)} | {pub} | "
            f"{r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
