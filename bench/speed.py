"""CPU speed levers, each measured against its alternative in one run (interleaved repeats):

* ``--part compile``: eager vs ``torch.compile`` (inductor) vs bf16 autocast for U-Net, DeepLab v3+,
  BEFUnet-small and the 3-D U-Net, training and inference; compile time, break-even steps, and
  model FLOP utilisation (achieved FLOP/s / the matmul peak measured in the same run);
* ``--part format``: NCHW vs channels_last for U-Net, DeepLab v3+ and the ResNet-34 U-Net at
  64², 128², 256² (the table behind ``medseg.models.base.MEMORY_FORMAT_RULES``);
* ``--part smp``: medseg's ``unet_resnet`` (ResNet-34, as shipped) vs smp ``Unet("resnet34")`` at
  64², 128², 256² (needs the bench venv).

Every contender runs in its own worker process (``bench.common``); the matmul peak is measured in
the driver (a large ``torch.mm``, fp32 and bf16) before and after the contenders. The load
average is recorded at the start and end: on the shared 2-core machine only ratios within one run
mean something. Train step = forward (+ autocast) + cross-entropy + backward + SGD(momentum)
step; inference = ``torch.inference_mode`` forward of a Conv-BN-folded copy (as medseg predicts).
FLOPs from ``torch.utils.flop_counter`` (multiply-add = 2; forward + backward for training; the
optimizer update is not counted).

    python -m bench.speed --part compile --json bench/_out/speed_compile.json
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Timing, Worker, emit_result, interleave, log_stderr  # noqa: E402

# name, builder kwargs, input shape per image (C, *spatial), batch
COMPILE_MODELS: dict[str, tuple[str, dict, tuple[int, ...], int]] = {
    "unet": ("unet", {"base_width": 32, "depth": 4}, (3, 128, 128), 4),
    "deeplabv3plus": ("deeplabv3plus", {}, (3, 128, 128), 2),
    "befunet_small": ("befunet_small", {}, (3, 224, 224), 2),
    "unet3d": (
        "unet3d",
        {"kernel_sizes": [[3, 3, 3]] * 4, "strides": [[1, 1, 1]] + [[2, 2, 2]] * 3, "base_width": 16},
        (1, 32, 32, 32),
        2,
    ),
}
FORMAT_MODELS: dict[str, tuple[str, dict]] = {  # the ResNet-34 U-Net's formats: in the smp part
    "unet": ("unet", {"base_width": 32, "depth": 4}),
    "deeplabv3plus": ("deeplabv3plus", {}),
    "unet_resnet34": ("unet_resnet", {"backbone": "resnet34"}),
}
# steps per timed sample: small inputs need several steps for a sample to be long enough
STEPS_BY_SIZE = {64: 6, 128: 2, 256: 1}


# --------------------------------------------------------------------------------------------------
# Worker factories (run in the child process)
# --------------------------------------------------------------------------------------------------


def _build(source: str, name: str, options: dict, in_ch: int, classes: int):
    import torch

    torch.manual_seed(0)
    if source == "smp":
        import segmentation_models_pytorch as smp

        return smp.Unet(encoder_name="resnet34", encoder_weights=None, in_channels=in_ch, classes=classes)
    from medseg.models import build_model

    return build_model(name, in_ch, classes, **options)


def _flops(model, x) -> tuple[int, int]:
    from medseg.engine.profiler import count_flops

    one = x[:1].contiguous()
    return count_flops(model, one), count_flops(model, one, backward=True)


def make_step(
    source: str,
    name: str,
    options: dict,
    shape: tuple[int, ...],
    batch: int,
    mode: str,
    fmt: str,
    compiled: bool,
    precision: str,
    threads: int,
    flops: bool = False,
    runtime: str = "default",
):
    """A zero-argument step for one contender; ``step.info`` carries the first call's seconds
    (compilation, for a compiled contender) and FLOPs per image. ``runtime="cli"``: the process
    settings the ``medseg`` command applies before it trains or predicts (freed memory kept in the
    heap, subnormal floats flushed; ``medseg.engine.runtime``), whichever library the model is from."""
    import torch
    import torch.nn.functional as F

    if runtime == "cli":
        from medseg.engine.runtime import apply_command_settings

        apply_command_settings(runs_networks=True)
    torch.set_num_threads(threads)
    classes = 2
    model = _build(source, name, options, shape[0], classes)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, *shape, generator=g)
    y = torch.randint(0, classes, (batch, *shape[1:]), generator=g)
    info: dict[str, Any] = {}
    if flops:
        info["flops_fwd"], info["flops_train"] = _flops(model, x)
    if fmt == "shipped":  # medseg's own choice (size rule); peers stay in their default format
        from medseg.models.base import to_preferred_format

        to_preferred_format(model, "auto", size=shape[1:])
        memory_format = getattr(model, "preferred_memory_format", torch.contiguous_format)
    else:
        memory_format = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
        model = model.to(memory_format=memory_format)
    if x.ndim == 4:
        x = x.contiguous(memory_format=memory_format)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    amp = torch.autocast("cpu", dtype=dtype, enabled=precision == "bf16")
    if mode == "infer":
        if source == "medseg":
            from medseg.models.fuse import fuse_conv_bn

            model = fuse_conv_bn(model)
        model.eval()
        net = torch.compile(model) if compiled else model

        def step() -> None:
            with torch.inference_mode(), amp:
                net(x)

    else:
        model.train()
        net = torch.compile(model) if compiled else model
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            with amp:
                logits = net(x)
            F.cross_entropy(logits.float(), y).backward()
            opt.step()

    t0 = time.perf_counter()
    step()
    info["first_call_s"] = time.perf_counter() - t0
    step.info = info  # type: ignore[attr-defined]
    return step


# --------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------


def matmul_peak(threads: int, n: int = 2048, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s of an n x n x n ``torch.mm`` in fp32 and bf16, interleaved; median over repeats."""
    import torch

    torch.set_num_threads(threads)
    out: dict[str, list[float]] = {"fp32": [], "bf16": []}
    mats = {
        k: [torch.randn(n, n).to(d) for _ in range(2)]
        for k, d in (("fp32", torch.float32), ("bf16", torch.bfloat16))
    }
    for a, b in mats.values():
        torch.mm(a, b)  # warm-up (oneDNN kernel selection)
    for _ in range(repeats):
        for key, (a, b) in mats.items():
            t0 = time.perf_counter()
            for _ in range(3):
                torch.mm(a, b)
            out[key].append(3 * 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return {
        **{f"{k}_gflops": statistics.median(v) for k, v in out.items()},
        **{f"{k}_gflops_max": max(v) for k, v in out.items()},
    }


def _env(args) -> dict[str, str]:
    return {"TORCHINDUCTOR_CACHE_DIR": str(args.inductor_cache), "OMP_NUM_THREADS": str(args.threads)}


DONE: list[dict[str, Any]] = []  # rows of finished groups, saved as they come (a long run may be cut short)


def _save_partial(args, rows: list[dict[str, Any]]) -> None:
    import json

    DONE.extend(rows)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        partial = {"load_start": args.load_start, "rows": DONE}
        args.json.with_suffix(".partial.json").write_text(json.dumps(partial, indent=1))


def _row(t: Timing, worker: Worker, items: int, **extra) -> dict[str, Any]:
    return {"name": t.name, **t.fields(items), **worker.info, **extra}


def run_compile(args) -> list[dict[str, Any]]:
    rows = []
    variants = (
        ((False, "fp32"), (False, "bf16"))
        if args.no_compile
        else ((False, "fp32"), (True, "fp32"), (False, "bf16"))
    )
    for key in args.models or list(COMPILE_MODELS):
        name, options, shape, batch = COMPILE_MODELS[key]
        workers = []
        for mode in ("train", "infer"):
            for compiled, precision in variants:
                label = f"{key} {mode} {'compiled' if compiled else 'eager'} {precision}"
                kw = dict(
                    source="medseg",
                    name=name,
                    options=options,
                    shape=shape,
                    batch=batch,
                    mode=mode,
                    fmt="shipped",
                    compiled=compiled,
                    precision=precision,
                    threads=args.threads,
                    flops=not compiled and precision == "fp32",
                )
                workers.append(Worker(label, make_step, kw, env=_env(args), warmup=args.warmup))
        log_stderr(f"group {key}: building and compiling {len(workers)} contenders")
        try:
            timings = interleave(workers, args.repeats, 1, log_stderr)
            group = []
            for w in workers:
                _, mode, variant, precision = w.name.split()
                group.append(
                    _row(
                        timings[w.name],
                        w,
                        batch,
                        part="compile",
                        model=key,
                        mode=mode,
                        variant=variant,
                        precision=precision,
                        shape=[batch, *shape],
                    )
                )
            _save_partial(args, group)
            rows += group
        except RuntimeError as exc:  # a contender that fails to build or compile: say so, go on
            log_stderr(f"group {key} failed: {exc}")
            rows.append({"part": "compile-error", "model": key, "error": str(exc)[:2000]})
        finally:
            for w in workers:
                w.stop()
    return rows


def run_format(args, sources=("medseg",)) -> list[dict[str, Any]]:
    rows = []
    for size in args.sizes:
        for key in args.models or list(FORMAT_MODELS):
            name, options = FORMAT_MODELS[key]
            workers = []
            for mode in ("train", "infer"):
                for fmt in ("contiguous", "channels_last"):
                    kw = dict(
                        source="medseg",
                        name=name,
                        options=options,
                        shape=(3, size, size),
                        batch=args.batch,
                        mode=mode,
                        fmt=fmt,
                        compiled=False,
                        precision="fp32",
                        threads=args.threads,
                    )
                    workers.append(
                        Worker(
                            f"{key} {size} {mode} {fmt}", make_step, kw, env=_env(args), warmup=args.warmup
                        )
                    )
            rows += _time_group(args, workers, size, part="format", model=key)
    return rows


def run_smp(args) -> list[dict[str, Any]]:
    rows = []
    for size in args.sizes:
        workers = []
        for mode in args.modes:
            for source in ("medseg", "smp"):
                # smp ships NCHW: its "shipped" contender is its contiguous one
                formats = [f if source == "medseg" or f != "shipped" else "contiguous" for f in args.formats]
                for fmt, runtime in itertools.product(dict.fromkeys(formats), args.runtimes):
                    kw = dict(
                        source=source,
                        name="unet_resnet",
                        options={"backbone": "resnet34"},
                        shape=(3, size, size),
                        batch=args.batch,
                        mode=mode,
                        fmt=fmt,
                        compiled=False,
                        precision="fp32",
                        threads=args.threads,
                        runtime=runtime,
                    )
                    label = fmt if runtime == "default" else f"{fmt}+{runtime}"
                    workers.append(
                        Worker(
                            f"{source} {size} {mode} {label}",
                            make_step,
                            kw,
                            env=_env(args),
                            warmup=args.warmup,
                        )
                    )
        rows += _time_group(args, workers, size, part="smp", model="unet_resnet34")
    return rows


def _time_group(args, workers: list[Worker], size: int, **extra) -> list[dict[str, Any]]:
    rows = []
    try:
        timings = interleave(workers, args.repeats, STEPS_BY_SIZE.get(size, 1), log_stderr)
        for w in workers:
            src_or_model, _, mode, fmt = w.name.split()
            rows.append(
                _row(
                    timings[w.name],
                    w,
                    args.batch,
                    size=size,
                    mode=mode,
                    fmt=fmt,
                    source=src_or_model,
                    **extra,
                )
            )
        _save_partial(args, rows)
    finally:
        for w in workers:
            w.stop()
    return rows


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def _spread(r: dict) -> str:
    return f"{r['s_per_step_min'] * 1e3:.0f}-{r['s_per_step_max'] * 1e3:.0f}"


def markdown_compile(result: dict) -> list[str]:
    peak = result["peak"]
    lines = [
        "| model | mode | variant | img/s (median) | ms/step min-max | x eager fp32 | first call (s) | "
        "compile (s) | break-even steps | GFLOP/s | MFU |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [r for r in result["rows"] if r.get("part") == "compile"]
    for r in rows:
        base = next(
            b
            for b in rows
            if b["model"] == r["model"]
            and b["mode"] == r["mode"]
            and b["variant"] == "eager"
            and b["precision"] == "fp32"
        )
        flops_key = "flops_train" if r["mode"] == "train" else "flops_fwd"
        per_img = base.get(flops_key, 0)
        batch = r["shape"][0]
        gflops = per_img * batch / r["s_per_step_median"] / 1e9
        mfu = gflops / peak[f"{r['precision']}_gflops"]
        compile_s = r["first_call_s"] - r["s_per_step_median"] if r["variant"] == "compiled" else None
        gain = base["s_per_step_median"] - r["s_per_step_median"]
        if compile_s is None:
            be = ""
        else:
            be = f"{compile_s / gain:.0f}" if gain > 0 else "never (slower)"
        lines.append(
            f"| {r['model']} | {r['mode']} | {r['variant']} {r['precision']} | {r['img_per_s']:.2f} | {_spread(r)} | "
            f"{base['s_per_step_median'] / r['s_per_step_median']:.2f} | {r['first_call_s']:.1f} | "
            f"{'' if compile_s is None else f'{compile_s:.1f}'} | {be} | {gflops:.1f} | {100 * mfu:.0f} % |"
        )
    return lines


def markdown_format(result: dict, part: str) -> list[str]:
    rows = [r for r in result["rows"] if r.get("part") == part]
    ref_fmt = "contiguous"
    lines = [
        "| model | size | mode | contender | img/s (median) | ms/step min-max | x "
        + ("NCHW" if part == "format" else "smp NCHW")
        + " |",
        "|---|---:|---|---|---:|---:|---:|",
    ]
    for r in rows:
        ref = next(  # NCHW of the same model (format part); smp in NCHW, as it ships (smp part)
            b
            for b in rows
            if b["model"] == r["model"]
            and b["size"] == r["size"]
            and b["mode"] == r["mode"]
            and b["fmt"] == ref_fmt
            and (part == "format" or b["source"] == "smp")
        )
        who = r["fmt"] if part == "format" else f"{r['source']} {r['fmt']}"
        lines.append(
            f"| {r['model']} | {r['size']} | {r['mode']} | {who} | {r['img_per_s']:.2f} | {_spread(r)} | "
            f"{ref['s_per_step_median'] / r['s_per_step_median']:.2f} |"
        )
    return lines


def markdown(result: dict) -> str:
    load = result["load"]
    peak = result["peak"]
    lines = [
        f"machine: {result['machine']}",
        f"load average (1, 5, 15 min) at start {load['start']}, at end {load['end']}",
        f"matmul peak ({peak['n']}^3 torch.mm, median of start and end runs): fp32 {peak['fp32_gflops']:.0f} "
        f"GFLOP/s, bf16 {peak['bf16_gflops']:.0f} GFLOP/s (best repeat {peak['fp32_gflops_max']:.0f} / "
        f"{peak['bf16_gflops_max']:.0f})",
        "",
    ]
    if any(r.get("part") == "compile" for r in result["rows"]):
        lines += markdown_compile(result) + [""]
    for part in ("format", "smp"):
        if any(r.get("part") == part for r in result["rows"]):
            lines += markdown_format(result, part) + [""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["compile", "format", "smp"], action="append", required=True)
    p.add_argument("--models", type=lambda s: s.split(","), help="subset of the part's models")
    p.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=[64, 128, 256])
    p.add_argument("--batch", type=int, default=2, help="batch of the format and smp parts")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--inductor-cache", type=Path, help="TORCHINDUCTOR_CACHE_DIR (default: a fresh one: cold compile)"
    )
    p.add_argument(
        "--no-compile",
        action="store_true",
        help="compile part: eager fp32 and bf16 only (no inductor compile)",
    )
    p.add_argument(
        "--modes", type=lambda s: s.split(","), default=["train", "infer"], help="smp part: train, infer"
    )
    p.add_argument(
        "--formats",
        type=lambda s: s.split(","),
        default=["contiguous", "channels_last"],
        help="smp part: contiguous, channels_last, shipped (medseg's size rule; smp's is NCHW)",
    )
    p.add_argument(
        "--runtimes",
        type=lambda s: s.split(","),
        default=["default"],
        help="smp part: default, cli (the medseg command's process settings: kept freed memory, "
        "flushed subnormals), applied to both libraries' contenders",
    )
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if unknown := set(args.runtimes) - {"default", "cli"}:
        p.error(f"unknown --runtimes {', '.join(sorted(unknown))}; choose default, cli")
    tmp = None
    if args.inductor_cache is None:
        tmp = tempfile.TemporaryDirectory(prefix="inductor_cold_")
        args.inductor_cache = Path(tmp.name)
    load_start = [round(v, 2) for v in os.getloadavg()]
    args.load_start = load_start
    peak0 = matmul_peak(args.threads)
    rows: list[dict[str, Any]] = []
    for part in args.part:
        rows += {"compile": run_compile, "format": run_format, "smp": run_smp}[part](args)
    peak1 = matmul_peak(args.threads)
    load_end = [round(v, 2) for v in os.getloadavg()]
    peak = {k: statistics.median([peak0[k], peak1[k]]) for k in peak0}
    peak.update(n=2048, start=peak0, end=peak1)
    args.load = {"start": load_start, "end": load_end}
    result_args = argparse.Namespace(
        **{k: v for k, v in vars(args).items() if k not in ("load", "load_start")}
    )
    result = emit_result(result_args, rows, lambda res: markdown({**res, "load": args.load, "peak": peak}))
    if args.json:
        import json

        result.update(load=args.load, peak=peak)
        args.json.write_text(json.dumps(result, indent=1))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
