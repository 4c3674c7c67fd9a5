"""Validation during training: mean foreground Dice over the validation cases, predicted
through the same path as ``medseg evaluate`` (:func:`medseg.engine.predict.predict_case`)
but without test-time augmentation or CRF."""

from __future__ import annotations

import numpy as np
import torch

from medseg.config import Config
from medseg.engine.predict import predict_case
from medseg.engine.task import IGNORE_INDEX, Task
from medseg.metrics import dice, evaluate_regions


def foreground_dice(
    pred: np.ndarray, target: np.ndarray, num_classes: int, roi: np.ndarray | None = None
) -> float:
    """Mean Dice over the foreground classes ``1..num_classes-1`` of one case, inside ``roi``."""
    if roi is not None:
        pred, target = pred[roi], target[roi]
    return float(np.mean([dice(pred == k, target == k) for k in range(1, num_classes)]))


def validate(model: torch.nn.Module, cases, task: Task, cfg: Config, device: torch.device) -> float:
    """Mean foreground Dice over ``cases``; the model is back in training mode afterwards."""
    model.eval()
    scores = []
    with torch.no_grad():
        for i in range(len(cases)):
            case = cases[i]
            labels, _ = predict_case(model, case, cfg, device, tta=False, crf=False)
            roi = case.get("roi")
            roi = None if roi is None else roi.numpy()
            target = case["mask"].numpy()
            if task.regions:  # region-based task: mean Dice over the regions
                per = evaluate_regions(
                    labels, target, task.regions, roi=roi, ignore_index=IGNORE_INDEX, surface=False
                )
                scores.append(float(np.mean([r["dice"] for r in per.values()])))
            else:
                scores.append(foreground_dice(labels, target, task.num_classes, roi))
    model.train()
    return float(np.mean(scores)) if scores else float("nan")
