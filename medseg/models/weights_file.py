"""Reading weights files: medseg checkpoints, plain safetensors files and torch state dicts.

It sits in the models layer, under both ``build_model(weights=...)`` and
``medseg.engine.checkpoint`` (which writes the files), and imports nothing of medseg but the
errors: models never need to import the engine to load weights.

A medseg checkpoint is ONE safetensors file: the model weights under ``model.*``, the
optimizer's tensors under ``optim.*`` and RNG states under ``rng.*``; everything else is
JSON in the safetensors header metadata under the key ``medseg`` (``format`` = FORMAT).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from medseg.errors import CheckpointError

FORMAT = "medseg-checkpoint-1"

# The header fields every medseg checkpoint's ``state`` holds, and their JSON types.
REQUIRED_STATE: dict[str, type] = {
    "model_name": str,
    "model_options": dict,
    "in_channels": int,
    "num_classes": int,
}
# Fields a checkpoint needs for inference (``evaluate``, ``predict``), and their types.
INFERENCE_STATE: dict[str, type] = {"task_mode": str, "class_names": list, "config": dict}
OPTIONAL_STATE: dict[str, type] = {"out_channels": int}
TASK_MODES = ("binary", "multiclass", "multilabel")
MAX_CHANNELS = 4096


def _field_error(state: dict, fields: Mapping[str, type], required: bool) -> str | None:
    for key, kind in fields.items():
        if key not in state:
            if required:
                return f"its header lacks state.{key}"
            continue
        value = state[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"header field state.{key} is {type(value).__name__}, expected {kind.__name__}"
    return None


def check_state(path: str | Path, meta: dict, *, inference: bool = False) -> dict:
    """The checkpoint header's ``state``, every field checked (present, of its type, in range)
    before anything is built from it; one :class:`CheckpointError` line naming the file."""
    state = meta.get("state")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: its header has no state object; not a usable medseg checkpoint")
    problem = _field_error(state, REQUIRED_STATE, True) or _field_error(state, OPTIONAL_STATE, False)
    if problem is None and inference:
        problem = _field_error(state, INFERENCE_STATE, True)
    if problem is None:
        for key in ("in_channels", "num_classes", "out_channels"):
            if key in state and not 1 <= state[key] <= MAX_CHANNELS:
                problem = f"header field state.{key}={state[key]} is out of range (1..{MAX_CHANNELS})"
    if problem is None and inference and state["task_mode"] not in TASK_MODES:
        problem = f"header field state.task_mode={state['task_mode']!r} is not one of {', '.join(TASK_MODES)}"
    if problem is None and inference and not all(isinstance(c, str) for c in state["class_names"]):
        problem = "header field state.class_names holds non-strings"
    if problem is not None:
        raise CheckpointError(f"{path}: {problem}")
    return state


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and metadata of a medseg checkpoint, with clear errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({exc})") from None
    if "medseg" not in header:
        raise CheckpointError(f"{path}: a safetensors file, but not a medseg checkpoint (no medseg metadata)")
    try:
        meta = json.loads(header["medseg"])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata ({exc})") from None
    except RecursionError:
        raise CheckpointError(f"{path}: checkpoint metadata nested too deeply to read") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{path}: unsupported checkpoint format {found!r}")
    check_state(path, meta)
    return tensors, meta


def split_tensors(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors named ``prefix.*``, with the prefix removed."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def check_shapes(own: dict[str, torch.Tensor], weights: dict[str, torch.Tensor], source: str) -> None:
    """Refuse weights whose names or shapes differ from the model's ``own`` state dict (which may
    live on the ``meta`` device: only shapes are compared), explained in one line."""
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    wrong = [k for k in own if k in weights and tuple(own[k].shape) != tuple(weights[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} with other shapes (e.g. {k}: file {tuple(weights[k].shape)} "
                f"vs model {tuple(own[k].shape)})"
            )
        raise CheckpointError(f"{source}: weights do not fit this model: " + "; ".join(parts))


def load_state_strict(model: torch.nn.Module, weights: dict[str, torch.Tensor], source: str) -> None:
    """Load weights, explaining a mismatch (another model, other classes) in one line."""
    check_shapes(model.state_dict(), weights, source)
    model.load_state_dict(weights, strict=True)


def read_model_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The model tensors of a local weights file: a medseg checkpoint, a plain safetensors
    file, or a torch state dict (loaded with ``weights_only=True``: no code is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        try:
            tensors, _ = read_checkpoint(path)
            return split_tensors(tensors, "model")
        except CheckpointError:
            try:
                return load_file(str(path))
            except (SafetensorError, OSError) as exc:
                raise CheckpointError(f"{path}: unreadable safetensors file ({exc})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means the file is unusable
        raise CheckpointError(f"{path}: not a loadable state dict ({type(exc).__name__}: {exc})") from None
    weights = obj.get("state_dict", obj.get("model", obj)) if isinstance(obj, dict) else None
    if not isinstance(weights, dict):
        raise CheckpointError(f"{path}: expected a state dict, found {type(obj).__name__}")
    return weights


def load_weights_file(model: torch.nn.Module, path: str | Path) -> None:
    """Load a local weights file (see :func:`read_model_weights`) into ``model``, strictly."""
    load_state_strict(model, read_model_weights(path), str(path))


def load_matching_weights(model: torch.nn.Module, path: str | Path) -> tuple[int, list[str]]:
    """Fine-tuning initialisation: load every tensor of the weights file ``path`` whose name and
    shape match ``model``; the others keep the model's fresh initialisation. Returns how many
    were loaded and one entry per skipped tensor (``name (why)``). As nnU-Net's pretrained-weights loading, which skips
    the segmentation head when the label set differs (Isensee et al., Nature Methods 2021)."""
    weights = read_model_weights(path)
    own = model.state_dict()
    skipped = [f"{k} (not in the file)" for k in own if k not in weights]
    fitting: dict[str, torch.Tensor] = {}
    for name, tensor in weights.items():
        if name not in own:
            skipped.append(f"{name} (not in the model)")
        elif tuple(tensor.shape) != tuple(own[name].shape):
            skipped.append(f"{name} (file {tuple(tensor.shape)} vs model {tuple(own[name].shape)})")
        else:
            fitting[name] = tensor
    if not fitting:
        raise CheckpointError(f"{path}: no tensor of this file fits the model; nothing to initialise from")
    model.load_state_dict(fitting, strict=False)
    return len(fitting), skipped
