"""Atomic, pickle-free checkpoints.

A checkpoint is ONE safetensors file: the model weights under ``model.*``, the
optimizer's tensors under ``optim.*`` and RNG states under ``rng.*``; everything else
(model name and options, config, epoch, optimizer hyper-parameters, history) is JSON
in the safetensors header metadata. One file means one ``os.replace`` makes it
atomic, and loading never unpickles anything.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from medseg.atomic import atomic_write, atomic_write_bytes, atomic_write_text  # noqa: F401 (re-exported)
from medseg.errors import CheckpointError

FORMAT = "medseg-checkpoint-1"


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, per_param in state["state"].items():
        for key, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    for idx, values in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(values)
    # JSON turns tuples (e.g. Adam's betas) into lists; restore them.
    groups = [
        {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
        for g in meta["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def capture_rng() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    np_state = np.random.get_state()
    py_state = random.getstate()
    meta = {
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    return tensors, meta


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(t for t in tensors if t.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    if "numpy" in meta:
        n = meta["numpy"]
        np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    if "python" in meta:
        p = meta["python"]
        random.setstate((p[0], tuple(p[1]), p[2]))


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    state: dict[str, Any],
    *,
    optimizer: torch.optim.Optimizer | None = None,
    rng: bool = False,
) -> Path:
    """Write ``model`` (+ optimizer and RNG when given) and the JSON ``state`` atomically.

    ``state`` must hold ``model_name``, ``model_options``, ``in_channels``, ``num_classes``.
    """
    for key in ("model_name", "model_options", "in_channels", "num_classes"):
        if key not in state:
            raise ValueError(f"checkpoint state needs '{key}'")
    model = getattr(model, "module", model)  # unwrap DDP
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta: dict[str, Any] = {"format": FORMAT, "state": state}
    if optimizer is not None:
        opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
        tensors.update(opt_tensors)
        meta["optimizer"] = opt_meta
    if rng:
        rng_tensors, rng_meta = capture_rng()
        tensors.update(rng_tensors)
        meta["rng"] = rng_meta
    # safetensors refuses tensors that share memory (tied weights); clone those.
    seen: set[int] = set()
    for k, v in tensors.items():
        ptr = v.untyped_storage().data_ptr() if v.numel() else id(v)
        if ptr in seen:
            tensors[k] = v.clone()
        seen.add(ptr)
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"medseg": json.dumps(meta)}))


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and metadata of a medseg checkpoint, with clear errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        from safetensors import safe_open

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
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unsupported checkpoint format {meta.get('format')!r}")
    return tensors, meta


def split_tensors(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def load_state_strict(model: torch.nn.Module, weights: dict[str, torch.Tensor], source: str) -> None:
    """Load weights, explaining a mismatch (another model, other classes) in one line."""
    own = model.state_dict()
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
    model.load_state_dict(weights, strict=True)


def load_model(path: str | Path, *, device: str | torch.device = "cpu"):
    """Rebuild the model a checkpoint was trained with and load its weights.

    Returns ``(model, state)``; ``state`` is the JSON state saved with it.
    """
    from medseg.models import build_model

    tensors, meta = read_checkpoint(path)
    state = meta["state"]
    model = build_model(
        state["model_name"],
        state["in_channels"],
        state.get("out_channels", state["num_classes"]),
        **state.get("model_options", {}),
    )
    load_state_strict(model, split_tensors(tensors, "model"), str(path))
    return model.to(device).eval(), state


def load_inference_model(path: str | Path, *, device: str | torch.device = "cpu"):
    """:func:`load_model`, prepared the way ``medseg evaluate`` and ``predict`` run it: Conv-BN
    folded (``medseg.models.fuse``) and in the model's preferred memory format."""
    from medseg.models.base import to_preferred_format
    from medseg.models.fuse import fuse_conv_bn

    model, state = load_model(path, device=device)
    return to_preferred_format(fuse_conv_bn(model, inplace=True)), state


def load_weights_file(model: torch.nn.Module, path: str | Path) -> None:
    """Load a local weights file into ``model``: a medseg checkpoint, a plain safetensors
    file, or a torch state dict (loaded with ``weights_only=True``: no code is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        try:
            tensors, _ = read_checkpoint(path)
            weights = split_tensors(tensors, "model")
        except CheckpointError:
            try:
                weights = load_file(str(path))
            except (SafetensorError, OSError) as exc:
                raise CheckpointError(f"{path}: unreadable safetensors file ({exc})") from None
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any failure means the file is unusable
            raise CheckpointError(
                f"{path}: not a loadable state dict ({type(exc).__name__}: {exc})"
            ) from None
        weights = obj.get("state_dict", obj.get("model", obj)) if isinstance(obj, dict) else None
        if not isinstance(weights, dict):
            raise CheckpointError(f"{path}: expected a state dict, found {type(obj).__name__}")
    load_state_strict(model, weights, str(path))


def restore_training(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    *,
    expect: dict[str, Any] | None = None,
) -> dict:
    """Load model, optimizer and RNG for ``--resume``; returns the saved state.

    ``expect`` (model_name, model_options, num_classes, in_channels) must match the
    checkpoint, so a checkpoint of another model is refused with a clear message.
    """
    tensors, meta = read_checkpoint(path)
    state = meta["state"]
    for key, value in (expect or {}).items():
        if state.get(key) != value:
            raise CheckpointError(
                f"{path}: checkpoint has {key}={state.get(key)!r}, but this run has {key}={value!r}"
            )
    load_state_strict(getattr(model, "module", model), split_tensors(tensors, "model"), str(path))
    if optimizer is not None:
        if "optimizer" not in meta:
            raise CheckpointError(f"{path}: holds no optimizer state; cannot resume from it")
        optimizer.load_state_dict(_unflatten_optimizer(split_tensors(tensors, "optim"), meta["optimizer"]))
    if "rng" in meta:
        restore_rng({k: v for k, v in tensors.items() if k.startswith("rng.")}, meta["rng"])
    return state
