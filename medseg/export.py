"""Export a segmentation model to ONNX or TorchScript, with a numerical check.

The exported graph takes ``image [B, C, H, W]`` and returns ``logits [B, K, H, W]``
with batch, height and width dynamic (H, W multiples of the model's
``input_multiple``). After writing the file, the exported model is run on random
inputs at two different sizes (onnxruntime for ONNX, ``torch.jit.load`` for
TorchScript) and compared with the PyTorch model; the largest absolute difference
and the tolerance are reported, and a difference above the tolerance is an error.
"""

from __future__ import annotations

import copy
import importlib
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medseg.atomic import atomic_write
from medseg.engine.checkpoint import load_model
from medseg.errors import CheckpointError
from medseg.export_formats import (
    ExportError,
    add_onnx_metadata,
    compare_outputs,
    first_line,
    onnx_runner,
    quiet,
    random_input,
    torchscript_runner,
    write_onnx,
)

FORMATS = ("onnx", "torchscript")
EXPORTERS = ("auto", "torchscript", "dynamo", "static")
DEFAULT_ATOL = 1e-4
_SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}


def export_sizes(model: nn.Module, size: tuple[int, int] | None = None) -> list[tuple[int, int]]:
    """The example size used for tracing, then a second, non-square size for the check.

    A model with a ``fixed_input_size`` attribute (H, W) is exported and checked at that
    size only. A model with ``valid_input_size(min_output)`` (valid-convolution U-Net)
    gets two valid sizes. Otherwise sizes are rounded up to the model's ``input_multiple``.
    """
    fixed = getattr(model, "fixed_input_size", None)
    if fixed is not None:
        fixed_h, fixed_w = (int(s) for s in fixed)
        return [(fixed_h, fixed_w)]
    valid = getattr(model, "valid_input_size", None)
    if callable(valid):
        h, w = size or (64, 64)
        first = (valid(int(h)), valid(int(w)))
        output_size = getattr(model, "output_size", None)
        out_h = output_size(first[0]) if callable(output_size) else first[0]
        out_w = output_size(first[1]) if callable(output_size) else first[1]
        return [first, (valid(out_h + 1), valid(out_w + 9))]
    m = int(getattr(model, "input_multiple", 1) or 1)
    if size is None:
        base = m * math.ceil(64 / m)
        size = (base, base)
    h, w = (m * math.ceil(int(s) / m) for s in size)
    return [(h, w), (h + m, w + 2 * m)]


def export_model(
    model: nn.Module,
    out: str | Path,
    *,
    format: str = "onnx",
    size: tuple[int, int] | None = None,
    batch: int = 1,
    exporter: str = "auto",
    opset: int = 18,
    check: bool = True,
    atol: float = DEFAULT_ATOL,
    seed: int = 0,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Export ``model`` (put in eval mode, on CPU) to ``out``.

    ``exporter`` (ONNX only): ``"torchscript"`` is the tracing exporter
    (``torch.onnx.export(dynamo=False)``), ``"dynamo"`` the ``torch.export``-based one,
    ``"static"`` exports with only the batch axis dynamic (H, W fixed at the example size). ``"auto"`` tries
    tracing, then dynamo, when an export fails or disagrees with PyTorch at the second
    (unseen) size, and last the static export (``result["note"]`` then says so).
    TorchScript is traced; when the trace does not generalise to the second size it is
    kept as a fixed-size model with the same note.

    Returns a dict: ``path, format, exporter, opset, sizes, checks`` (one row per checked
    input: shape, max abs / rel difference), ``max_abs_diff``, ``tolerance``, ``passed``.
    Raises :class:`ExportError` when the check fails.
    """
    _check_arguments(format, exporter, opset, check)
    out = output_path(out, format)
    # written beside `out` and renamed over it only when the export passed its check: a failure
    # or a kill leaves the old file (or none), never half of one
    done: dict[str, Any] = {}
    atomic_write(
        out,
        lambda tmp: done.update(
            _export_checked(
                model, tmp, out, format, size, batch, exporter, opset, check, atol, seed, metadata
            )
        ),
    )
    return done


def output_path(out: str | Path, format: str) -> Path:
    """``out``, with the format's suffix added when it has none."""
    out = Path(out)
    return out.with_suffix(_SUFFIX.get(format, "")) if out.suffix == "" else out


def _check_arguments(format: str, exporter: str, opset: int, check: bool) -> None:
    if format not in FORMATS:
        raise ExportError(f"unknown export format '{format}'; choose one of {', '.join(FORMATS)}")
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter '{exporter}'; choose one of {', '.join(EXPORTERS)}")
    if format != "onnx":
        return
    from torch.onnx import _constants  # the opsets this torch can write

    low, high = _constants.ONNX_MIN_OPSET, _constants.ONNX_MAX_OPSET
    if not low <= opset <= high:
        raise ExportError(f"--opset {opset}: this torch exports ONNX opsets {low} to {high}")
    needed = ["onnx", "onnxscript"] + (["onnxruntime"] if check else [])
    missing = [name for name in needed if not _importable(name)]
    if missing:
        raise ExportError(
            f'ONNX export needs {", ".join(missing)}, not installed: pip install "medseg[export]"'
        )


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def _export_checked(
    model: nn.Module,
    out: Path,
    final: Path,
    format: str,
    size: tuple[int, int] | None,
    batch: int,
    exporter: str,
    opset: int,
    check: bool,
    atol: float,
    seed: int,
    metadata: dict[str, Any] | None,
) -> dict[str, Any]:
    """Export to ``out`` (a temporary file), check, and describe the result as ``final``."""
    model = model.cpu().eval()
    reference = model
    if callable(getattr(model, "reparameterize", None)):
        # e.g. BEFUnet's pixel-difference convolutions folded into plain ones; the check
        # below compares the folded copy against the original model
        folded: Any = copy.deepcopy(model)
        model = folded.reparameterize().eval()
    channels = int(getattr(model, "in_channels", 3))
    sizes = export_sizes(model, size)
    batch = max(batch, 2)  # torch.export specialises a dimension of size 1: trace with 2
    inputs = [random_input(batch, channels, sizes[0], seed)]
    inputs += [random_input(batch + 1, channels, s, seed + i + 1) for i, s in enumerate(sizes[1:])]
    meta = _export_metadata(model, channels, metadata)
    start = time.perf_counter()
    if format == "torchscript":
        attempts = ["trace", "static"]
    else:
        attempts = ["torchscript", "dynamo", "static"] if exporter == "auto" else [exporter]
    errors: list[str] = []
    result: dict[str, Any] | None = None
    for how in attempts:
        static = how == "static" or len(sizes) == 1
        # a static export is only promised (and checked) at the example size
        check_inputs = (
            [inputs[0], random_input(batch + 1, channels, sizes[0], seed + 7)] if static else inputs
        )
        failure = _write_export(model, inputs[0], out, format, how, opset, meta)
        if failure is None and check:
            checks, failure = _check_export(out, format, how, reference, check_inputs)
        else:
            checks = []
        if failure is not None:
            errors.append(failure)
            continue
        result = _describe_export(final, out, format, how, opset, sizes, static, checks, atol, check)
        result["seconds"] = round(time.perf_counter() - start, 2)
        if result["passed"] or how == attempts[-1]:
            break
        errors.append(
            f"{how}: max abs difference {result['max_abs_diff']:.3g} > tolerance {atol:g} at "
            f"{', '.join(str(c['input_shape']) for c in checks if c['max_abs_diff'] > atol)}"
        )
    return _final_result(result, errors, model, format, atol, final)


def _export_metadata(model: nn.Module, channels: int, metadata: dict[str, Any] | None) -> dict[str, str]:
    """What the exported file says about itself (ONNX metadata props / TorchScript extra file)."""
    meta = {
        "producer": "medseg",
        "input": "image [B, C, H, W] float32, normalised",
        "output": "logits [B, K, H, W]",
        "in_channels": str(channels),
        "num_classes": str(getattr(model, "num_classes", "")),
        "input_multiple": str(getattr(model, "input_multiple", 1)),
    }
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()})
    return meta


def _write_export(
    model: nn.Module,
    example: torch.Tensor,
    out: Path,
    format: str,
    how: str,
    opset: int,
    meta: dict[str, str],
) -> str | None:
    """Write one export attempt to ``out``; the failure as one line, or None."""
    try:
        with torch.no_grad(), quiet():
            if format == "torchscript":
                traced = torch.jit.trace(model, example, check_trace=False)
                torch.jit.save(traced, str(out), _extra_files={"medseg.json": json.dumps(meta)})
            else:
                write_onnx(model, example, out, how, opset)
        if format == "onnx":
            add_onnx_metadata(out, meta)
    except Exception as exc:  # reported by the caller with the exporter's name
        return f"{how}: {type(exc).__name__}: {first_line(exc)}"
    return None


def _check_export(
    out: Path, format: str, how: str, reference: nn.Module, inputs: list[torch.Tensor]
) -> tuple[list[dict[str, Any]], str | None]:
    """Run the exported file against PyTorch on ``inputs``: (rows, failure line or None)."""
    runner = onnx_runner(out) if format == "onnx" else torchscript_runner(out)
    try:
        return compare_outputs(runner, reference, inputs), None
    except Exception as exc:  # e.g. a shape baked into the graph
        return [], f"{how}: exported model failed to run: {type(exc).__name__}: {first_line(exc)}"


def _describe_export(
    final: Path,
    out: Path,
    format: str,
    how: str,
    opset: int,
    sizes: list[tuple[int, int]],
    static: bool,
    checks: list[dict[str, Any]],
    atol: float,
    check: bool,
) -> dict[str, Any]:
    """The result of one export attempt (``seconds`` is added by the caller)."""
    worst = max((c["max_abs_diff"] for c in checks), default=float("nan"))
    result: dict[str, Any] = {
        "path": str(final),
        "format": format,
        "exporter": "trace" if format == "torchscript" else how,
        "opset": opset if format == "onnx" else None,
        "sizes": [list(s) for s in sizes[: 1 if static else None]],
        "dynamic_axes": ["batch"] if static else ["batch", "height", "width"],
        "checks": checks,
        "max_abs_diff": worst,
        "tolerance": atol,
        "passed": (not check) or (all(c["finite"] for c in checks) and worst <= atol),
        "checked": check,
        "seconds": 0.0,
        "file_mb": round(out.stat().st_size / 2**20, 3),
    }
    if static and len(sizes) > 1:
        result["note"] = (
            f"height and width are fixed at {sizes[0][0]}x{sizes[0][1]}: no exporter produced a "
            "graph that matches PyTorch at other sizes (e.g. adaptive pooling)"
        )
    return result


def _final_result(
    result: dict[str, Any] | None, errors: list[str], model: nn.Module, format: str, atol: float, final: Path
) -> dict[str, Any]:
    """The last attempt's result, or one error naming every attempt's failure."""
    if result is None:
        raise ExportError(f"could not export {type(model).__name__} to {format}: " + "; ".join(errors))
    result["attempts"] = errors
    if not result["passed"]:
        raise ExportError(
            f"exported {format} model differs from PyTorch: max abs difference "
            f"{result['max_abs_diff']:.3g} > tolerance {atol:g} (inputs "
            f"{', '.join(str(c['input_shape']) for c in result['checks'])}); nothing written to {final}"
        )
    return result


def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path | None = None,
    *,
    format: str = "onnx",
    size: tuple[int, int] | None = None,
    batch: int = 1,
    exporter: str = "auto",
    opset: int = 18,
    check: bool = True,
    atol: float = DEFAULT_ATOL,
) -> dict[str, Any]:
    """Export a medseg checkpoint (``.safetensors``) next to it or to ``out``.

    The model is rebuilt from the checkpoint's metadata (``model_name``,
    ``model_options``, ``in_channels``, ``num_classes``) by
    ``medseg.engine.checkpoint.load_model``. See :func:`export_model` for the result.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise CheckpointError(f"checkpoint not found: {checkpoint}")
    out = output_path(checkpoint.with_suffix(_SUFFIX.get(format, "")) if out is None else out, format)
    if out.resolve() == checkpoint.resolve():
        raise ExportError(f"--out {out} is the checkpoint itself; exporting would replace it")
    model, meta = load_model(checkpoint)
    info = {
        k: meta[k]
        for k in (
            "model_name",
            "model_options",
            "in_channels",
            "num_classes",
            "out_channels",
            "task_mode",
            "class_names",
        )
        if k in meta
    }
    info["checkpoint"] = checkpoint.name
    return export_model(
        model,
        out,
        format=format,
        size=size,
        batch=batch,
        exporter=exporter,
        opset=opset,
        check=check,
        atol=atol,
        metadata=info,
    )


def format_report(result: dict[str, Any]) -> str:
    """A few lines for the CLI: file, exporter, and the numerical check with its tolerance."""
    lines = [
        f"wrote {result['path']} ({result['format']}, exporter {result['exporter']}, "
        f"{result['file_mb']} MB, dynamic axes: {', '.join(result['dynamic_axes'])})"
    ]
    for c in result["checks"]:
        lines.append(f"  input {c['input_shape']}: max |exported - pytorch| = {c['max_abs_diff']:.3g}")
    if result["checked"]:
        verdict = "OK" if result["passed"] else "FAILED"
        lines.append(
            f"  check {verdict}: max abs difference {result['max_abs_diff']:.3g} "
            f"<= tolerance {result['tolerance']:g}"
            if result["passed"]
            else f"  check {verdict}: max abs difference {result['max_abs_diff']:.3g} "
            f"> tolerance {result['tolerance']:g}"
        )
    if result.get("note"):
        lines.append(f"  note: {result['note']}")
    return "\n".join(lines)
