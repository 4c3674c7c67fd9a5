"""The one prediction path: a case in, labels and probabilities at its native size out.

The trainer's validation, ``medseg evaluate`` and ``medseg predict`` all call
:func:`predict_case`, so a checkpoint scores the same on a case whichever of them asks.
Per slice: bring the image to the scale the model was trained at (``data.resize_policy``),
predict it whole or by sliding window (``medseg.inference``), map the probabilities back,
optionally refine them with a dense CRF, and take the labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch

from medseg.config import Config, load_config
from medseg.data import to_model_space
from medseg.engine.checkpoint import load_inference_model
from medseg.engine.compile import prepare_inference
from medseg.engine.device import resolve_device
from medseg.engine.task import Task
from medseg.inference import dense_crf, predict_proba


def labels_from_proba(proba: torch.Tensor) -> torch.Tensor:
    """``[..., K, H, W]`` probabilities -> integer labels ``[..., H, W]`` (K = 1: p > 0.5)."""
    if proba.shape[-3] == 1:
        return (proba[..., 0, :, :] > 0.5).long()
    return proba.argmax(dim=-3)


def predict_slices(
    model: torch.nn.Module, x: torch.Tensor, cfg: Config, device: torch.device, tta: bool
) -> torch.Tensor:
    """Probabilities ``[N, K, H, W]`` (on CPU) for images ``[N, C, H, W]`` at native size."""
    ev = cfg.eval
    # Models trained on native-resolution crops see whole images through a window of the
    # training size (the context they were trained with); others run on the whole image.
    crop = cfg.data.resize_policy == "crop"
    window = ev.window or (cast(tuple[int, int], tuple(cfg.data.size)) if crop else None)
    out = []
    for i in range(0, x.shape[0], ev.batch_size):
        chunk, undo = to_model_space(x[i : i + ev.batch_size].to(device), cfg.data)
        proba = predict_proba(
            model,
            chunk,
            window=window,
            overlap=ev.overlap,
            blend=ev.blend,
            batch_size=ev.batch_size,
            tta=tta,
            device=device,
        )
        out.append(undo(proba).float().cpu())
    return torch.cat(out)


def crf_refine(proba: torch.Tensor, display: np.ndarray) -> torch.Tensor:
    """Dense-CRF refinement of ``[N, K, H, W]`` probabilities, slice by slice, on the
    display images ``[N, H, W(, 3)]`` (Krähenbühl & Koltun 2011; DeepLab v1/v2)."""
    return torch.stack(
        [
            torch.as_tensor(dense_crf(display[i], _two_channel(proba[i]).numpy()))
            for i in range(proba.shape[0])
        ]
    )


def _two_channel(p: torch.Tensor) -> torch.Tensor:
    """CRF needs a distribution over classes: a sigmoid map becomes [1-p, p]."""
    return torch.cat([1 - p, p]) if p.shape[0] == 1 else p


def predict_case(
    model: torch.nn.Module,
    case: dict,
    cfg: Config,
    device: torch.device,
    *,
    tta: bool | None = None,
    crf: bool | None = None,
) -> tuple[np.ndarray, torch.Tensor]:
    """Labels (numpy, native size; ``[H, W]`` or ``[D, H, W]``) and probabilities for one case.

    ``tta`` / ``crf`` default to ``cfg.eval``. A volume ``[D, C, H, W]`` is predicted slice by slice.
    """
    tta = cfg.eval.tta if tta is None else tta
    crf = cfg.eval.crf if crf is None else crf
    image = case["image"]
    volume = image.ndim == 4
    proba = predict_slices(model, image if volume else image[None], cfg, device, tta)
    if crf:
        display = np.asarray(case["display"])
        proba = crf_refine(proba, display if volume else display[None])
    labels = labels_from_proba(proba).numpy().astype(np.uint8 if proba.shape[1] < 256 else np.int32)
    if not volume:
        labels, proba = labels[0], proba[0]
    return labels, proba


@dataclass
class LoadedCheckpoint:
    """A checkpoint opened for inference: the prepared model on its device, its saved JSON
    state, the run's configuration (with overrides) and its task."""

    model: torch.nn.Module
    state: dict
    cfg: Config
    device: torch.device
    task: Task

    def predict(self, case: dict, *, tta: bool | None = None, crf: bool | None = None):
        """:func:`predict_case` with this checkpoint's model and configuration."""
        return predict_case(self.model, case, self.cfg, self.device, tta=tta, crf=crf)


def open_checkpoint(
    checkpoint: str | Path, *, overrides: list[str] | tuple[str, ...] = (), device: str = "auto"
) -> LoadedCheckpoint:
    """Load ``checkpoint`` the way ``evaluate`` and ``predict`` run it (Conv-BN folded, preferred
    memory format) on ``device`` (``auto``: the run's ``train.device``)."""
    model, state = load_inference_model(checkpoint)
    cfg = load_config(state["config"], overrides)
    dev = resolve_device(device if device != "auto" else cfg.train.device)
    model = prepare_inference(model.to(dev), cfg.eval, cfg.eval.window or cfg.data.size, dev)
    return LoadedCheckpoint(model, state, cfg, dev, Task.from_state(state))
