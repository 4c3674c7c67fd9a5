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
from medseg.data.regions import Regions, parse_regions, regions_to_labels
from medseg.engine.checkpoint import load_inference_model
from medseg.engine.compile import prepare_inference
from medseg.engine.device import resolve_device
from medseg.engine.mirroring import tta_axes
from medseg.engine.task import Task, prediction_regions
from medseg.errors import CheckpointError, MedsegError
from medseg.inference import dense_crf, predict_proba


def labels_from_proba(proba: torch.Tensor, regions: Regions | None = None) -> torch.Tensor:
    """``[..., K, H, W]`` probabilities -> integer labels ``[..., H, W]`` (K = 1: p > 0.5;
    ``regions``: each region's p > 0.5, painted back to labels by nnU-Net's region order)."""
    if regions is not None:
        masks = (proba > 0.5).movedim(-3, 0).numpy()
        return torch.from_numpy(regions_to_labels(masks, regions)).long()
    if proba.shape[-3] == 1:
        return (proba[..., 0, :, :] > 0.5).long()
    return proba.argmax(dim=-3)


def is_multilabel(cfg: Config) -> bool:
    """Region-based models (``data.regions`` / ``loss.mode: multilabel``): a sigmoid per channel."""
    return cfg.loss.mode == "multilabel" or bool(cfg.data.regions)


def predict_slices(
    model: torch.nn.Module, x: torch.Tensor, cfg: Config, device: torch.device, tta: bool
) -> torch.Tensor:
    """Probabilities ``[N, K, H, W]`` (on CPU) for images ``[N, C, H, W]`` at native size."""
    multilabel = is_multilabel(cfg)
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
            tta=tta_axes(cfg, 2) if tta else False,
            device=device,
            multilabel=multilabel,
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


def predict_volume_3d(
    model: torch.nn.Module, volume: torch.Tensor, cfg: Config, device: torch.device, tta: bool
) -> torch.Tensor:
    """Probabilities ``[D, K, H, W]`` (float32, CPU) of a 3-D model for a volume ``[D, C, H, W]``
    at native resolution: a Gaussian-weighted sliding window of the training patch
    (``data.patch_size``) with ``eval.overlap``, mirrored with ``tta`` on the axes training
    mirrored (nnU-Net's inference, Isensee et al. 2021; :mod:`medseg.engine.mirroring`). The
    layout matches the slice-wise path."""
    ev = cfg.eval
    x = volume.permute(1, 0, 2, 3)[None]  # [1, C, D, H, W]
    proba = predict_proba(
        model,
        x,
        window=cfg.data.patch_size,
        overlap=ev.overlap,
        blend=ev.blend,
        batch_size=ev.batch_size,
        tta=tta_axes(cfg, 3) if tta else False,
        device=torch.device("cpu"),
        multilabel=is_multilabel(cfg),
    )
    return proba[0].permute(1, 0, 2, 3).float().contiguous()


def is_3d(cfg: Config) -> bool:
    """Whether the run's model sees volume patches (``data.patch_size`` set) rather than slices."""
    return cfg.data.patch_size is not None


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

    ``tta`` / ``crf`` default to ``cfg.eval``. A volume ``[D, C, H, W]`` is predicted slice by
    slice by a 2-D model, whole by a 3-D one (:func:`predict_volume_3d`); its probabilities are
    ``[D, K, H, W]`` either way.
    """
    tta = cfg.eval.tta if tta is None else tta
    crf = cfg.eval.crf if crf is None else crf
    image = case["image"]
    volume = image.ndim == 4
    if is_3d(cfg):
        if not volume:
            where = case.get("source") or case.get("id")
            raise MedsegError(f"{where}: a 3-D model predicts volumes, got a 2-D image")
        proba = predict_volume_3d(model, image, cfg, device, tta)
    else:
        proba = predict_slices(model, image if volume else image[None], cfg, device, tta)
    regions = prediction_regions(cfg, proba.shape[1])
    if crf and regions is not None:
        raise MedsegError("--crf needs class probabilities; a region-based (multilabel) model has none")
    if crf:
        display = np.asarray(case["display"])
        proba = crf_refine(proba, display if volume else display[None])
    top = max(max(r) for r in regions) if regions else proba.shape[1] - 1  # the largest label
    labels = labels_from_proba(proba, regions).numpy().astype(np.uint8 if top < 256 else np.int32)
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
    task = checked_task(checkpoint, state)
    cfg = load_config(state["config"], overrides)
    dev = resolve_device(device if device != "auto" else cfg.train.device)
    model = prepare_inference(model.to(dev), cfg.eval, cfg.eval.window or cfg.data.size, dev)
    return LoadedCheckpoint(model, state, cfg, dev, task)


def checked_task(checkpoint: str | Path, state: dict) -> Task:
    """The task of a checkpoint's header, its configuration validated and its regions (if
    any) one per output channel; a bad header is one CheckpointError naming the file."""
    try:
        cfg = load_config(state["config"])
        task = Task.from_state(state)
        channels = int(state.get("out_channels", task.out_channels))
        if cfg.data.regions:
            parse_regions(cfg.data.regions, int(state["num_classes"]))
        regions = prediction_regions(cfg, channels)
        if regions is not None and len(regions) != channels:
            raise MedsegError(f"{len(regions)} regions in its config for {channels} output channels")
    except MedsegError as exc:
        raise CheckpointError(f"{checkpoint}: bad checkpoint header: {exc}") from None
    return task
