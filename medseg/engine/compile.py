"""``--compile``: ``torch.compile`` (inductor) as an option, with its compilation time measured
apart from the steps it speeds up.

Off by default: on the 2-core CPU it was measured to pay little or nothing for the zoo (see
``docs/bench/speed.md``), and compiling costs minutes. ``torch.compile`` is lazy, so
:func:`compile_for_training` runs one throw-away forward + backward at the training shape right
away (weights, BatchNorm statistics, gradients and the random state are put back afterwards) and
reports how long that took; the run's own steps then start compiled. Inductor's CPU backend
writes C++ and needs a C++ compiler: without one :func:`require_compiler` stops with one line
instead of the deep traceback inductor raises at the first step.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from typing import Any

import torch

from medseg.engine.device import InferenceAutocast, autocast_for
from medseg.engine.progress import console
from medseg.errors import MedsegError
from medseg.models.base import format_input, to_preferred_format


def cpp_compiler_candidates() -> list[str]:
    """The C++ compilers inductor tries on this platform, in order (``torch._inductor.config.cpp.cxx``:
    ``$CXX`` or ``g++``; ``clang++`` on macOS)."""
    try:
        from torch._inductor import config as inductor_config

        names = [c for c in tuple(inductor_config.cpp.cxx) if isinstance(c, str)]
    except (ImportError, AttributeError):  # an inductor without the setting: its usual default
        names = []
    return names or [os.environ.get("CXX", "g++")]


def find_cpp_compiler() -> str | None:
    """Path of the first C++ compiler inductor would use, or None when none is installed."""
    for name in cpp_compiler_candidates():
        found = shutil.which(name)
        if found:
            return found
    return None


def require_compiler(device: torch.device) -> None:
    """Raise a one-line :class:`MedsegError` when ``--compile`` cannot work on ``device`` (CPU
    without a C++ compiler)."""
    if device.type != "cpu":
        return
    if find_cpp_compiler() is None:
        names = " or ".join(cpp_compiler_candidates())
        raise MedsegError(
            f"--compile needs a C/C++ compiler for torch.compile on CPU ({names} not found); "
            "install one (e.g. apt-get install g++, or set CXX) or run without --compile"
        )


def compile_module(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``torch.compile(module)`` (inductor, default mode) after checking for a compiler. The
    result forwards attribute reads to ``module``, so code that asks the model for
    ``input_multiple`` or ``preferred_memory_format`` keeps working."""
    require_compiler(device)
    return torch.compile(module)  # type: ignore[return-value]


def _float_tensors(out: Any) -> list[torch.Tensor]:
    """Every floating-point tensor in a forward's output (a tensor, or tuples/lists/dicts of them)."""
    if isinstance(out, torch.Tensor):
        return [out] if out.is_floating_point() else []
    items = out.values() if isinstance(out, dict) else out if isinstance(out, (list, tuple)) else ()
    return [t for item in items for t in _float_tensors(item)]


def _restore(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for key, value in model.state_dict().items():
            value.copy_(state[key])
    model.zero_grad(set_to_none=True)


def compile_for_training(
    net: torch.nn.Module,
    example: torch.Tensor,
    device: torch.device,
    autocast: Callable[[], Any],
) -> tuple[torch.nn.Module, float]:
    """Compile ``net`` and compile its training graphs now, on ``example`` (a batch of the training
    shape, already in the run's memory format), under ``autocast``; returns the compiled module and
    the seconds compilation took. The throw-away step leaves no trace: parameters, buffers
    (BatchNorm statistics), gradients and the torch random state are as before."""
    compiled = compile_module(net, device)
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    was_training = net.training
    net.train()
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        t0 = time.perf_counter()
        with autocast():
            out = compiled(example)
        tensors = _float_tensors(out)
        sum(t.float().sum() for t in tensors).backward()  # type: ignore[union-attr]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
    _restore(net, state)
    net.train(was_training)
    return compiled, seconds


def training_example(
    dataset: Any, batch_size: int, model: torch.nn.Module, setting: Any, device
) -> torch.Tensor:
    """A batch shaped like the run's training batches: the first training sample repeated, on
    ``device`` and in the run's memory format (``setting`` = ``train.channels_last``)."""
    image = torch.as_tensor(dataset[0]["image"])
    batch = max(1, min(batch_size, len(dataset)))
    x = image.unsqueeze(0).expand(batch, *image.shape).to(device=device, dtype=torch.float32)
    return format_input(x.contiguous(), model, setting)


def compile_training_net(
    net: torch.nn.Module, model: torch.nn.Module, dataset: Any, train_cfg: Any, device: torch.device
) -> torch.nn.Module:
    """``train.compile``: :func:`compile_for_training` on a batch like the run's, under the run's
    autocast (``train.amp``), with the compile time printed as its own line; the step times and
    the time budget do not include it."""
    example = training_example(dataset, train_cfg.batch_size, model, train_cfg.channels_last, device)
    compiled, seconds = compile_for_training(
        net, example, device, lambda: autocast_for(device, train_cfg.amp)
    )
    console.print(
        f"torch.compile: {seconds:.1f} s compiling the training step at input {list(example.shape)} "
        "(not counted in step times or the budget; another input shape compiles again)"
    )
    return compiled


def prepare_inference(
    model: torch.nn.Module, eval_cfg: Any, size: Any, device: torch.device
) -> torch.nn.Module:
    """The inference model as ``eval`` asks: its memory format chosen for inputs of ``size``
    (the window or training size; :func:`medseg.models.base.memory_format_for_size`), bf16
    autocast for ``eval.precision: bf16``, and ``torch.compile`` for ``eval.compile``. With the
    defaults (fp32, no compile) only the format is set."""
    model = to_preferred_format(model, "auto", size=tuple(size) if size is not None else None)
    if eval_cfg.precision == "bf16":
        model = InferenceAutocast(model, device)
    if eval_cfg.compile:
        model = compile_module(model, device)
        console.print(
            "torch.compile: the inference model compiles at its first batch of each new input shape"
        )
    return model
