"""medseg's ``unet_resnet`` (ResNet-34) against smp ``Unet("resnet34")``, both steps in ONE process.

``bench/speed.py --part smp`` times each contender in its own worker process; on this VM the
speed of a process drifts (the same step took 0.49-1.70 s in fresh processes), so a ratio between
two processes can be machine drift. Here the two steps (``bench.speed.make_step``: the same input,
loss and SGD as that bench, NCHW, fp32) live in one process and alternate (order reversed every
repeat); then ``torch.profiler`` lists each step's top operators.

    PYTHONPATH=. .venv-bench/bin/python bench/smp_same_process.py --size 64 --repeats 8 --modes train,infer
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from torch.profiler import ProfilerActivity, profile  # noqa: E402

from bench.speed import make_step  # noqa: E402

SOURCES = ("smp", "medseg")


def steps_for(mode: str, args: argparse.Namespace) -> dict:
    kw = dict(name="unet_resnet", options={"backbone": "resnet34"}, shape=(3, args.size, args.size))
    kw.update(
        batch=args.batch, mode=mode, fmt="contiguous", compiled=False, precision="fp32", threads=args.threads
    )
    return {source: make_step(source=source, **kw) for source in SOURCES}


def alternate(steps: dict, repeats: int) -> dict[str, list[float]]:
    for step in steps.values():  # warm-up beyond make_step's first call
        step()
        step()
    times: dict[str, list[float]] = {source: [] for source in steps}
    for r in range(repeats):
        for source in SOURCES if r % 2 == 0 else SOURCES[::-1]:
            t0 = time.perf_counter()
            steps[source]()
            times[source].append(time.perf_counter() - t0)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--modes", default="train", help="comma list: train, infer")
    args = p.parse_args()
    for mode in args.modes.split(","):
        steps = steps_for(mode, args)
        times = alternate(steps, args.repeats)
        for source, t in times.items():
            print(
                f"{mode} {source}: median {1000 * statistics.median(t):.1f} ms/step, min-max {1000 * min(t):.0f}-{1000 * max(t):.0f}"
            )
        ratio = statistics.median(times["smp"]) / statistics.median(times["medseg"])
        print(f"{mode} medseg / smp speed: {ratio:.2f}x")
        for source, step in steps.items():
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(3):
                    step()
            print(f"===== {mode} {source}")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))


if __name__ == "__main__":
    main()
