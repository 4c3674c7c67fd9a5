"""The per-format steps of an export: writing ONNX or TorchScript, running the written file, and
comparing its outputs with PyTorch's (:mod:`medseg.export` drives them and checks the result)."""

from __future__ import annotations

import json
import logging
import re
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medseg.errors import MedsegError


class ExportError(MedsegError):
    """The model could not be exported, or the exported model disagrees with PyTorch."""


@contextmanager
def quiet():
    """The exporters warn loudly about tracing and deprecations; the numerical check
    below is what tells whether the export is right."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def first_line(exc: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    return text.splitlines()[0][:300] if text else ""


def random_input(batch: int, channels: int, size: tuple[int, int], seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, *size, generator=gen)


def write_onnx(model: nn.Module, example: torch.Tensor, path: Path, exporter: str, opset: int) -> None:
    names: dict[str, Any] = {"input_names": ["image"], "output_names": ["logits"]}
    if exporter == "torchscript":
        axes = {0: "batch", 2: "height", 3: "width"}
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=opset,
            dynamic_axes={"image": axes, "logits": axes},
            do_constant_folding=True,
            **names,
        )
        return
    # torch.export first, so that a model it cannot capture fails in seconds instead of going
    # through torch.onnx's slower fallback strategies. Dim.AUTO lets the exporter keep the
    # model's own size constraints (or specialise, which the numerical check then catches).
    auto = torch.export.Dim.AUTO
    shapes = {0: auto, 2: auto, 3: auto} if exporter == "dynamo" else {0: auto}
    try:
        program = torch.export.export(model, (example,), dynamic_shapes=(shapes,), strict=False)
        torch.onnx.export(
            program,
            (example,),
            str(path),
            dynamo=True,
            opset_version=opset,
            verbose=False,
            external_data=False,
            **names,
        )
    except Exception:
        if exporter != "static":
            raise
        axes = {0: "batch"}  # last resort: the tracing exporter at a fixed size
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=opset,
            dynamic_axes={"image": axes, "logits": axes},
            do_constant_folding=True,
            **names,
        )


def onnx_runner(path: Path):
    import onnxruntime as ort  # deferred: an optional dependency (pip install medseg[export])

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x.numpy()})[0]


def torchscript_runner(path: Path):
    with quiet():
        loaded = torch.jit.load(str(path), map_location="cpu")
    loaded.eval()

    def run(x: torch.Tensor) -> np.ndarray:
        with torch.no_grad(), quiet():
            return loaded(x).numpy()

    return run


def add_onnx_metadata(path: Path, meta: dict[str, Any]) -> None:
    import onnx  # deferred: an optional dependency (pip install medseg[export])

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    onnx.save(proto, str(path))


def compare_outputs(runner, model: nn.Module, inputs: list[torch.Tensor]) -> list[dict[str, Any]]:
    """Run ``runner`` (exported model) and ``model`` on each input; max abs / rel difference."""
    rows = []
    for x in inputs:
        with torch.no_grad():
            ref = model(x).float().numpy()
        out = np.asarray(runner(x), dtype=np.float32)
        if out.shape != ref.shape:
            raise ExportError(
                f"exported model returned shape {out.shape} for input {tuple(x.shape)}, "
                f"PyTorch returned {ref.shape}"
            )
        diff = np.abs(out - ref)
        rows.append(
            {
                "input_shape": list(x.shape),
                "max_abs_diff": float(diff.max()) if diff.size else 0.0,
                "max_rel_diff": float((diff / np.maximum(np.abs(ref), 1e-6)).max()) if diff.size else 0.0,
                "finite": bool(np.isfinite(out).all()),
            }
        )
    return rows
