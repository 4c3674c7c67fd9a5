"""Atomic, pickle-free checkpoints.

A checkpoint is ONE safetensors file: the model weights under ``model.*``, the
optimizer's tensors under ``optim.*`` and RNG states under ``rng.*``; everything else
(model name and options, config, epoch, optimizer hyper-parameters, history) is JSON
in the safetensors header metadata. One file means one ``os.replace`` makes it
atomic, and loading never unpickles anything. Reading the format lives one layer lower, in
``medseg.models.weights_file`` (models load weights files without importing the engine).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from medseg.atomic import atomic_write
from medseg.engine.rng import capture_rng, restore_rng
from medseg.errors import CheckpointError, MedsegError
from medseg.models import build_model
from medseg.models.base import to_preferred_format
from medseg.models.fuse import fuse_conv_bn
from medseg.models.weights_file import (  # noqa: F401 (re-exported: the checkpoint API in one place)
    FORMAT,
    check_shapes,
    check_state,
    load_state_strict,
    load_weights_file,
    read_checkpoint,
    split_tensors,
)


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


def first_nonfinite(tensors: dict[str, torch.Tensor]) -> tuple[str, int] | None:
    """``(name, count)`` of the first floating-point tensor holding NaN or Inf, with how many
    tensors do; None when every tensor is finite."""
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    return (bad[0], len(bad)) if bad else None


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
    bad = first_nonfinite(tensors)
    if bad is not None:
        raise CheckpointError(
            f"{path}: not written: {bad[1]} of {len(tensors)} model tensors hold NaN/Inf "
            f"(e.g. {bad[0]}); training diverged, the previous checkpoint is kept"
        )
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


def _build_from_state(path: str | Path, state: dict, *, meta_device: bool) -> torch.nn.Module | None:
    """The model a checkpoint's header describes; on the ``meta`` device (no memory; None when
    the builder cannot run there) for checking shapes first."""
    args = (state["model_name"], state["in_channels"], state.get("out_channels", state["num_classes"]))
    try:
        if meta_device:
            with torch.device("meta"):
                return build_model(*args, **state["model_options"])
        return build_model(*args, **state["model_options"])
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - options from a file: any failure is the file's
        if meta_device and not isinstance(exc, (TypeError, ValueError, KeyError, MedsegError)):
            return None
        raise CheckpointError(
            f"{path}: its header's model cannot be built ({type(exc).__name__}: {exc})"
        ) from None


def load_model(path: str | Path, *, device: str | torch.device = "cpu", inference: bool = False):
    """Rebuild the model a checkpoint was trained with and load its weights.

    Returns ``(model, state)``; ``state`` is the JSON state saved with it. ``inference``: also
    require the header fields ``evaluate``/``predict`` read (task mode, class names, config).
    """
    tensors, meta = read_checkpoint(path)
    state = check_state(path, meta, inference=inference)
    bad = first_nonfinite(split_tensors(tensors, "model"))
    if bad is not None:
        raise CheckpointError(
            f"{path}: {bad[1]} model tensors hold NaN/Inf (first: {bad[0]}); the training diverged, "
            "this checkpoint cannot predict"
        )
    weights = split_tensors(tensors, "model")
    skeleton = _build_from_state(path, state, meta_device=True)
    if skeleton is not None:  # shapes checked before a single parameter is allocated
        check_shapes(skeleton.state_dict(), weights, str(path))
    model = _build_from_state(path, state, meta_device=False)
    assert model is not None
    load_state_strict(model, weights, str(path))
    return model.to(device).eval(), state


def load_inference_model(path: str | Path, *, device: str | torch.device = "cpu"):
    """:func:`load_model`, prepared the way ``medseg evaluate`` and ``predict`` run it: Conv-BN
    folded (``medseg.models.fuse``) and in the model's preferred memory format."""
    model, state = load_model(path, device=device, inference=True)
    return to_preferred_format(fuse_conv_bn(model, inplace=True)), state


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
