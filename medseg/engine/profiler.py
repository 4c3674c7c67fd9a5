"""Model cost on the current device: parameters, FLOPs, throughput, peak memory.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (one multiply-add
= 2 FLOPs; convolutions, matrix products and attention are counted, element-wise ops
are not). Throughput is the median over timed steps after warm-up, in images per
second. Peak memory is ``torch.cuda.max_memory_allocated`` above the level before
the phase on CUDA; on CPU it is the peak resident-set size above the level before
the phase, sampled every millisecond from ``/proc/self/statm`` (an approximation:
the C allocator may keep freed memory).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from rich.table import Table
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from medseg.engine.compile import require_compiler
from medseg.models import build_model
from medseg.models.base import format_input, resolve_memory_format, to_preferred_format
from medseg.models.fuse import fuse_conv_bn


def count_flops(model: nn.Module, x: torch.Tensor, *, backward: bool = False) -> int:
    """FLOPs of one forward pass (plus the backward pass when ``backward``) on ``x``."""
    was_training = model.training
    model.train(backward)
    try:
        with FlopCounterMode(display=False) as counter:
            if backward:
                model(x).float().sum().backward()
            else:
                with torch.no_grad():
                    model(x)
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def peak_memory(device: torch.device):
    """Yields a dict whose ``"mb"`` is set, on exit, to the peak memory above the start level."""
    box: dict[str, Any] = {"mb": None, "method": None}
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        try:
            yield box
        finally:
            _sync(device)
            box["mb"] = (torch.cuda.max_memory_allocated(device) - start) / 2**20
            box["method"] = "cuda.max_memory_allocated"
        return
    if not os.path.exists("/proc/self/statm"):
        yield box
        return
    start = _rss_bytes()
    peak = [start]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            stop.wait(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield box
    finally:
        stop.set()
        thread.join()
        peak[0] = max(peak[0], _rss_bytes())
        box["mb"] = (peak[0] - start) / 2**20
        box["method"] = "rss sampled (approximate)"


def _random_target(logits_shape: torch.Size, device: torch.device) -> torch.Tensor:
    b, k, h, w = logits_shape
    if k == 1:
        return torch.randint(0, 2, (b, 1, h, w), device=device).float()
    return torch.randint(0, k, (b, h, w), device=device)


def _loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits.float(), target)
    return F.cross_entropy(logits.float(), target)


def _time_steps(step, device: torch.device, warmup: int, steps: int) -> tuple[list[float], float]:
    """Times of ``steps`` steps after ``warmup`` ones, and the seconds of the very first call
    (the one that compiles, for a compiled model)."""
    t0 = time.perf_counter()
    step()
    _sync(device)
    first = time.perf_counter() - t0
    for _ in range(warmup - 1):
        step()
    _sync(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times, first


def profile_module(
    model: nn.Module,
    *,
    size: tuple[int, int] = (256, 256),
    batch: int = 2,
    device: str | torch.device | None = None,
    steps: int = 10,
    warmup: int = 3,
    train: bool = True,
    amp: bool = False,
    memory_format: bool | str = "auto",
    fuse: bool = True,
    compile: bool = False,
) -> dict[str, Any]:
    """Profile ``model`` on random inputs ``[batch, in_channels, *size]``, run the way medseg
    runs it: weights and inputs in ``memory_format`` (``"auto"``: the model's
    ``preferred_memory_format``, as the trainer and evaluator use it), and for inference a
    Conv-BN-folded copy (``fuse``, as ``medseg evaluate`` / ``predict`` use it).

    Inference: eval mode under ``torch.inference_mode``. Training: one AdamW step
    on cross-entropy (BCE for one output channel) per timed step, so the numbers include
    the backward pass and the optimiser update. ``amp`` uses bfloat16 autocast on CPU,
    float16 on CUDA. ``compile``: the timed modules are ``torch.compile``-d; the first call's
    time minus the median step is reported apart as ``*_compile_s`` (the steps do not include it).
    Without ``compile`` the first call is a warm-up step. The caller's model keeps its weights, BatchNorm statistics, mode and
    (contiguous) memory format.
    """
    if steps < 1 or warmup < 0 or batch < 1:
        raise ValueError("profile_module needs steps >= 1, warmup >= 0, batch >= 1")
    device = (
        torch.device(device)
        if device is not None
        else (torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    )
    m = int(getattr(model, "input_multiple", 1) or 1)
    if size[0] % m or size[1] % m:
        raise ValueError(f"{type(model).__name__} needs H and W divisible by {m}, got {tuple(size)}")
    model = model.to(device)
    was_training = model.training
    was_contiguous = all(p.is_contiguous() for p in model.parameters())
    # training steps (and train-mode FLOP counting) change weights and BatchNorm statistics:
    # work on the caller's model and put its state back at the end
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    own_format = model.__dict__.get("preferred_memory_format")  # the size rule may set one
    try:
        return _profile(model, size, batch, device, steps, warmup, train, amp, memory_format, fuse, compile)
    finally:
        if was_contiguous:
            model.to(memory_format=torch.contiguous_format)
        model.load_state_dict(state)
        model.zero_grad(set_to_none=True)
        if own_format is None:
            model.__dict__.pop("preferred_memory_format", None)
        else:
            model.__dict__["preferred_memory_format"] = own_format
        model.train(was_training)


def _profile(
    model: nn.Module,
    size: tuple[int, int],
    batch: int,
    device: torch.device,
    steps: int,
    warmup: int,
    train: bool,
    amp: bool,
    memory_format: bool | str,
    fuse: bool,
    compile: bool = False,
) -> dict[str, Any]:
    channels = int(getattr(model, "in_channels", 3))
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    one = torch.randn(1, channels, *size, device=device)
    flops = count_flops(model, one)
    train_flops = count_flops(model, one, backward=True) if train else None
    to_preferred_format(model, memory_format, size=size if memory_format in ("auto", None) else None)
    x = format_input(torch.randn(batch, channels, *size, device=device), model, memory_format)
    infer_model = fuse_conv_bn(model) if fuse else model
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype, enabled=amp)

    if compile:
        require_compiler(device)
    infer_times, infer_first, infer_mem = _time_inference(
        infer_model, x, autocast, device, warmup, steps, compile
    )
    out = _describe_run(model, device, amp, memory_format, fuse, compile, [batch, channels, *size])
    out |= {
        "params": params,
        "trainable_params": trainable,
        "gflops_per_image": flops / 1e9,
        "train_gflops_per_image": train_flops / 1e9 if train_flops is not None else None,
        "infer_ms_per_batch": 1e3 * statistics.median(infer_times),
        "infer_images_per_s": batch / statistics.median(infer_times),
        "infer_peak_memory_mb": infer_mem["mb"],
        "infer_first_call_s": infer_first,
        "infer_compile_s": max(0.0, infer_first - statistics.median(infer_times)) if compile else None,
        "memory_method": infer_mem["method"],
        "steps": steps,
        "warmup": warmup,
    }
    if train:
        out |= _training_columns(model, x, autocast, device, warmup, steps, compile)
    return out


def _describe_run(
    model: nn.Module,
    device: torch.device,
    amp: bool,
    memory_format: bool | str,
    fuse: bool,
    compile: bool,
    input_shape: list[int],
) -> dict[str, Any]:
    """The columns that say what was timed: model, device, threads, precision, format, input."""
    return {
        "model": type(model).__name__,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "amp": amp,
        "memory_format": (
            "channels_last"
            if resolve_memory_format(model, memory_format) == torch.channels_last
            else "contiguous"
        ),
        "fused": fuse,
        "compiled": compile,
        "input_shape": input_shape,
    }


def _training_columns(
    model, x: torch.Tensor, autocast, device, warmup: int, steps: int, compile: bool
) -> dict:
    """Time the training step and return its columns."""
    times, first, mem = _time_training(model, x, autocast, device, warmup, steps, compile)
    median = statistics.median(times)
    return {
        "train_first_call_s": first,
        "train_compile_s": max(0.0, first - median) if compile else None,
        "train_ms_per_batch": 1e3 * median,
        "train_images_per_s": x.shape[0] / median,
        "train_peak_memory_mb": mem["mb"],
    }


def _time_inference(
    model: nn.Module, x: torch.Tensor, autocast, device, warmup: int, steps: int, compile: bool = False
):
    """Step times, first-call seconds and peak memory of inference (eval mode, ``inference_mode``)."""
    model.eval()
    net = torch.compile(model) if compile else model

    def infer_step() -> None:
        with torch.inference_mode(), autocast():
            net(x)

    with peak_memory(device) as mem:
        times, first = _time_steps(infer_step, device, warmup, steps)
    return times, first, mem


def _time_training(
    model: nn.Module, x: torch.Tensor, autocast, device, warmup: int, steps: int, compile: bool = False
):
    """Step times, first-call seconds and peak memory of training: one AdamW step on CE (BCE for
    one channel)."""
    model.train()
    net = torch.compile(model) if compile else model
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    with torch.no_grad():
        target = _random_target(model(x).shape, device)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            logits = net(x)
        _loss(logits, target).backward()
        optimizer.step()

    with peak_memory(device) as mem:
        times, first = _time_steps(train_step, device, warmup, steps)
    return times, first, mem


def profile_model(
    name: str,
    *,
    size: tuple[int, int] = (256, 256),
    in_channels: int = 3,
    num_classes: int = 2,
    batch: int = 2,
    device: str | torch.device | None = None,
    options: dict[str, Any] | None = None,
    steps: int = 10,
    warmup: int = 3,
    train: bool = True,
    amp: bool = False,
    memory_format: bool | str = "auto",
    fuse: bool = True,
    compile: bool = False,
) -> dict[str, Any]:
    """Build the registered model ``name`` (random weights) and :func:`profile_module` it."""
    model = build_model(name, in_channels, num_classes, **(options or {}))
    result = profile_module(
        model,
        size=size,
        batch=batch,
        device=device,
        steps=steps,
        warmup=warmup,
        train=train,
        amp=amp,
        memory_format=memory_format,
        fuse=fuse,
        compile=compile,
    )
    result.update({"model": name, "options": dict(options or {}), "num_classes": num_classes})
    return result


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def profile_table(results: list[dict[str, Any]] | dict[str, Any]):
    """A ``rich`` table with one row per profiled model."""
    if isinstance(results, dict):
        results = [results]
    first = results[0] if results else {}
    title = (
        f"{first.get('device_name', '')} ({first.get('device', '')}, {first.get('threads', '')} threads), "
        f"input {first.get('input_shape', '')}"
    )
    table = Table(title=title)
    compiled = any(r.get("compiled") for r in results)
    columns = [
        "model",
        "params (M)",
        "GFLOPs/img",
        "train img/s",
        "infer img/s",
        "train peak MB",
        "infer peak MB",
    ]
    for col in columns + (["compile s train / infer"] if compiled else []):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in results:
        cells = [
            str(r["model"]),
            _fmt(r["params"] / 1e6, ".3f"),
            _fmt(r["gflops_per_image"], ".3f"),
            _fmt(r.get("train_images_per_s"), ".2f"),
            _fmt(r["infer_images_per_s"], ".2f"),
            _fmt(r.get("train_peak_memory_mb"), ".0f"),
            _fmt(r["infer_peak_memory_mb"], ".0f"),
        ]
        if compiled:
            cells.append(f"{_fmt(r.get('train_compile_s'), '.1f')} / {_fmt(r.get('infer_compile_s'), '.1f')}")
        table.add_row(*cells)
    table.caption = (
        "FLOPs by torch.utils.flop_counter (multiply-add = 2); throughput = median of "
        f"{first.get('steps', '')} steps; memory: {first.get('memory_method', '')}"
        + ("; compile s = first call minus the median step (torch.compile, not in img/s)" if compiled else "")
    )
    return table
