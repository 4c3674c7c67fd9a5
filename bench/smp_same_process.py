"""medseg's ``unet_resnet`` (ResNet-34) against smp ``Unet("resnet34")``: training steps in ONE process.

``bench/speed.py --part smp`` times each contender in its own worker process; on this VM the
speed of a process drifts (the same step took 0.49-1.70 s in fresh processes), so a ratio between
two processes can be machine drift. Here both models live in one process and their steps alternate
(order reversed every repeat), then ``torch.profiler`` lists each step's top operators.

    PYTHONPATH=. .venv-bench/bin/python bench/smp_same_process.py --size 64 --repeats 8
"""

from __future__ import annotations

import argparse
import statistics
import time

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

import medseg


def build(kind: str) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    if kind == "smp":
        model = smp.Unet("resnet34", encoder_weights=None, classes=2)
    else:
        model = medseg.build_model("unet_resnet", in_channels=3, num_classes=2, backbone="resnet34")
    model.train()
    return model, torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.randn(args.batch, 3, args.size, args.size)
    y = torch.randint(0, 2, (args.batch, args.size, args.size))
    models = {kind: build(kind) for kind in ("smp", "medseg")}

    def step(kind: str) -> None:
        model, opt = models[kind]
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    for kind in models:
        for _ in range(3):
            step(kind)
    times: dict[str, list[float]] = {kind: [] for kind in models}
    for r in range(args.repeats):
        for kind in list(models) if r % 2 == 0 else list(reversed(models)):
            t0 = time.perf_counter()
            step(kind)
            times[kind].append(time.perf_counter() - t0)
    for kind, t in times.items():
        print(
            f"{kind}: median {1000 * statistics.median(t):.1f} ms/step, min-max {1000 * min(t):.0f}-{1000 * max(t):.0f}"
        )
    print(f"medseg / smp speed: {statistics.median(times['smp']) / statistics.median(times['medseg']):.2f}x")
    for kind in models:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                step(kind)
        print(f"===== {kind}")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))


if __name__ == "__main__":
    main()
