"""Cost of a benchmark cell's model: parameters, GFLOPs, throughput and peak memory, measured
once per model setting and cached under ``OUT/profiles``."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

from medseg.benchmark.cells import write_json
from medseg.engine.profiler import profile_module


def _profile_size(model: Any, size: tuple[int, int]) -> tuple[int, int]:
    valid = getattr(model, "valid_input_size", None)
    if callable(valid):
        return valid(size[0]), valid(size[1])
    m = int(getattr(model, "input_multiple", 1) or 1)
    return m * math.ceil(size[0] / m), m * math.ceil(size[1] / m)


def profile_cell(
    out_dir: Path, model: Any, state: dict[str, Any], size: tuple[int, int], batch: int, device: str
) -> dict[str, Any]:
    """Cost of the cell's model, cached per (model, options, channels, size, batch, device)."""
    key = json.dumps(
        [
            state["model_name"],
            state.get("model_options", {}),
            state["in_channels"],
            state.get("out_channels"),
            list(size),
            batch,
            device,
        ],
        sort_keys=True,
    )
    path = (
        Path(out_dir)
        / "profiles"
        / f"{state['model_name']}-{hashlib.sha1(key.encode()).hexdigest()[:10]}.json"
    )
    if path.is_file():
        return json.loads(path.read_text())
    size = _profile_size(model, size)
    args = {
        "name": state["model_name"],
        "size": list(size),
        "in_channels": state["in_channels"],
        "num_classes": state.get("out_channels", state["num_classes"]),
        "batch": batch,
        "device": device,
        "options": state.get("model_options", {}),
        "steps": 5,
        "warmup": 2,
    }
    try:
        # a fresh interpreter, so that the CPU peak-memory reading (RSS growth) is not hidden by
        # memory the training already took from the system
        proc = subprocess.run(
            [sys.executable, "-c", _PROFILE_CHILD, json.dumps(args)],
            capture_output=True,
            text=True,
            timeout=1800,
            check=True,
        )
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith(_PROFILE_MARK))
        prof = json.loads(line[len(_PROFILE_MARK) :])
    except Exception:  # no subprocess possible here: profile in-process
        prof = profile_module(model, size=size, batch=batch, device=device, steps=5, warmup=2)
    write_json(path, prof)
    return prof


_PROFILE_MARK = "MEDSEG_PROFILE_JSON "
_PROFILE_CHILD = (
    "import json, sys\n"
    "from medseg.engine.profiler import profile_model\n"
    "a = json.loads(sys.argv[1])\n"
    "r = profile_model(a.pop('name'), **a)\n"
    f"print({_PROFILE_MARK!r} + json.dumps(r))\n"
)


def cost_columns(prof: dict[str, Any]) -> dict[str, Any]:
    return {
        "gflops": prof["gflops_per_image"],
        "infer_images_per_s": prof["infer_images_per_s"],
        "peak_memory_mb": prof.get("train_peak_memory_mb"),
        "profile_train_images_per_s": prof.get("train_images_per_s"),
    }
