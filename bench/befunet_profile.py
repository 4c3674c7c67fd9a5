"""Where a BEFUnet training (or inference) step spends its time: medseg against the official code.

``torch.profiler`` over one step per contender (built by ``bench.befunet.make_step``, same input,
loss and optimiser as the speed benchmark), after ``--warmup`` steps. Reports, per contender:

* forward time per component (Swin body, edge branch, fusion, DLF, decoder): a profiler range
  opened when the first module of a component is entered and closed when it is left, so nested
  modules count once; the backward pass runs in autograd's engine and is reported by operator;
* the operators with the most self CPU time, forward and backward together.

Contenders run one after another in this process: use it for proportions, and
``bench/befunet.py`` (interleaved, separate processes) for speed ratios::

    python -m bench.befunet_profile --models befunet,official,befunet_matched,official_patched
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.befunet import DEFAULT_OFFICIAL, OFFICIAL_MODELS, make_step  # noqa: E402
from bench.common import log_stderr, machine_summary  # noqa: E402

# module-name prefix -> component (first match wins)
MEDSEG_COMPONENTS = (
    ("body.", "Swin body"),
    ("edge.", "edge branch"),
    ("lcaf.", "fusion"),
    ("edge_add.", "fusion"),
    ("dlf.", "DLF"),
    ("decoder.", "decoder"),
)
OFFICIAL_COMPONENTS = (
    ("All2Cross.pyramid.swin_transformer.", "Swin body"),
    ("All2Cross.pyramid.pidinet_layers.", "edge branch"),
    ("All2Cross.pyramid.", "fusion"),  # 1x1 edge projections, patch merging, class-token norms
    ("All2Cross.", "DLF"),
    ("", "decoder"),
)


def component_ranges(net, components) -> list:
    """Forward hooks that open a profiler range named after the component of the outermost
    module entered, and close it when that module returns. Returns the hook handles."""
    import torch

    depth = [0]
    open_range: list = []
    handles = []

    def enter(label: str):
        def pre(module, inputs):
            if depth[0] == 0:
                rf = torch.profiler.record_function(f"fwd: {label}")
                rf.__enter__()
                open_range.append(rf)
            depth[0] += 1

        return pre

    def leave(module, inputs, output):
        depth[0] -= 1
        if depth[0] == 0 and open_range:
            open_range.pop().__exit__(None, None, None)

    for name, module in net.named_modules():
        if not name or any(prefix.startswith(name + ".") for prefix, _ in components):
            continue  # the model or a container above a component (e.g. All2Cross)
        label = next((lab for prefix, lab in components if (name + ".").startswith(prefix)), None)
        if label is None:
            continue
        handles.append(module.register_forward_pre_hook(enter(label)))
        handles.append(module.register_forward_hook(leave))
    return handles


def profile_one(model: str, args) -> str:
    from torch.profiler import ProfilerActivity, profile

    step = make_step(
        model, args.mode, args.batch, args.size, args.classes, args.official, {}, precision=args.precision
    )
    for _ in range(args.warmup):
        step()
    t0 = time.perf_counter()
    step()
    unprofiled = time.perf_counter() - t0
    comps = OFFICIAL_COMPONENTS if model in OFFICIAL_MODELS else MEDSEG_COMPONENTS
    handles = component_ranges(step.net, comps)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    for h in handles:
        h.remove()
    events = prof.key_averages()
    fwd = sorted(
        ((e.key[5:], e.cpu_time_total / 1e3) for e in events if e.key.startswith("fwd: ")),
        key=lambda kv: -kv[1],
    )
    total_self = sum(e.self_cpu_time_total for e in events) / 1e3
    lines = [
        f"#### {model} {args.mode} {args.precision}",
        "",
        f"Unprofiled step {unprofiled:.2f} s; profiled: {total_self / 1e3:.2f} s of CPU time (self, all ops).",
        "",
        "| forward component | ms | share of profiled CPU time |",
        "|---|---:|---:|",
    ]
    lines += [f"| {k} | {v:.0f} | {v / total_self:.1%} |" for k, v in fwd]
    lines += ["", "| operator (self CPU time) | ms | share | calls |", "|---|---:|---:|---:|"]
    ops = sorted((e for e in events if not e.key.startswith("fwd: ")), key=lambda e: -e.self_cpu_time_total)
    for e in ops[: args.rows]:
        ms = e.self_cpu_time_total / 1e3
        lines.append(f"| `{e.key[:70]}` | {ms:.0f} | {ms / total_self:.1%} | {e.count} |")
    del step
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--official", default=str(DEFAULT_OFFICIAL), help="checkout of Omid-Nejati/BEFUnet")
    p.add_argument("--models", default="befunet,official")
    p.add_argument("--mode", default="train", choices=("train", "infer"))
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--classes", type=int, default=9)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rows", type=int, default=12)
    args = p.parse_args(argv)
    log_stderr(machine_summary())
    print(f"Profile: batch {args.batch}, input 3x{args.size}x{args.size}; {machine_summary()}.\n")
    for model in args.models.split(","):
        print(profile_one(model, args), "\n", flush=True)


if __name__ == "__main__":
    main()
