"""Overlap metrics from one confusion count per case and class.

With TP, FP, FN, TN counted over the evaluated pixels (inside the ROI, if any):

- Dice (Sørensen 1948; Dice 1945)        2TP / (2TP + FP + FN)
- IoU / Jaccard (Jaccard 1912)           TP / (TP + FP + FN)
- sensitivity, recall, TPR               TP / (TP + FN)
- specificity, TNR                       TN / (TN + FP)
- precision, PPV                         TP / (TP + FP)
- accuracy                               (TP + TN) / (TP + FP + FN + TN)

Zero denominators (Taha & Hanbury 2015, sec. 4): a ratio 0/0 is 1 when the case has no error at
all (FP = FN = 0: both masks empty, "nothing to find and nothing found"), and ``nan`` otherwise
(e.g. sensitivity of a prediction when the target is empty). Under the ``legacy`` empty policy
Dice and IoU follow the TransUNet rule instead (see :mod:`medseg.metrics.empty`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medseg.metrics.empty import EmptyPolicy, resolve_empty
from medseg.metrics.inputs import as_binary, check_pair

OVERLAP_METRICS = ("dice", "iou", "sensitivity", "specificity", "precision", "accuracy")


def _ratio(num: float, den: float, perfect: bool) -> float:
    if den > 0:
        return float(num) / float(den)
    return 1.0 if perfect else float("nan")


def overlap_from_counts(
    tp: int, fp: int, fn: int, tn: int, empty: str | float | EmptyPolicy | None = "nan"
) -> dict[str, float]:
    """All six overlap metrics from confusion counts (formulas in the module docstring)."""
    policy = resolve_empty(empty)
    perfect = fp == 0 and fn == 0
    out = {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, perfect),
        "iou": _ratio(tp, tp + fp + fn, perfect),
        "sensitivity": _ratio(tp, tp + fn, perfect),
        "specificity": _ratio(tn, tn + fp, perfect),
        "precision": _ratio(tp, tp + fp, perfect),
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn, perfect),
    }
    if policy.mode == "legacy":
        pred_any, target_any = tp + fp > 0, tp + fn > 0
        if not pred_any:
            out["dice"] = out["iou"] = 0.0
        elif not target_any:
            out["dice"] = out["iou"] = 1.0
    return out


def binary_confusion(pred: Any, target: Any, roi: Any | None = None) -> tuple[int, int, int, int]:
    """(TP, FP, FN, TN) of two binary masks, counted inside ``roi`` when given."""
    p, t = as_binary(pred, "pred"), as_binary(target, "target")
    check_pair(p, t)
    if roi is not None:
        r = as_binary(roi, "roi")
        check_pair(p, r)
        p, t = p[r], t[r]
    n = p.size
    tp = int(np.count_nonzero(p & t))
    n_p = int(np.count_nonzero(p))
    n_t = int(np.count_nonzero(t))
    fp, fn = n_p - tp, n_t - tp
    return tp, fp, fn, n - tp - fp - fn


def confusion_matrix(pred_labels: np.ndarray, target_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """K x K counts in one pass, rows = target class, columns = predicted class (1-D label arrays)."""
    t, p = target_labels.ravel(), pred_labels.ravel()
    counts = np.zeros(num_classes * num_classes, dtype=np.int64)
    step = 1 << 22  # chunks keep the int64 temporaries small on large volumes
    for start in range(0, t.size, step):
        idx = t[start : start + step].astype(np.intp) * num_classes + p[start : start + step]
        counts += np.bincount(idx, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def counts_from_matrix(cm: np.ndarray, c: int) -> tuple[int, int, int, int]:
    """(TP, FP, FN, TN) of class ``c`` (one-vs-rest) from a confusion matrix."""
    tp = int(cm[c, c])
    fp = int(cm[:, c].sum()) - tp
    fn = int(cm[c, :].sum()) - tp
    return tp, fp, fn, int(cm.sum()) - tp - fp - fn


def _one(name: str, pred: Any, target: Any, empty: Any, roi: Any | None) -> float:
    return overlap_from_counts(*binary_confusion(pred, target, roi), empty=empty)[name]


def dice(
    pred: Any, target: Any, *, empty: str | float | EmptyPolicy | None = "nan", roi: Any = None
) -> float:
    """Dice coefficient 2|P∩G| / (|P| + |G|) of two binary masks (both empty: 1)."""
    return _one("dice", pred, target, empty, roi)


def iou(pred: Any, target: Any, *, empty: str | float | EmptyPolicy | None = "nan", roi: Any = None) -> float:
    """Intersection over union |P∩G| / |P∪G| of two binary masks (both empty: 1)."""
    return _one("iou", pred, target, empty, roi)


def sensitivity(pred: Any, target: Any, *, roi: Any = None) -> float:
    """Sensitivity (recall) TP / (TP + FN); nan when the target is empty and the prediction is not."""
    return _one("sensitivity", pred, target, None, roi)


recall = sensitivity


def specificity(pred: Any, target: Any, *, roi: Any = None) -> float:
    """Specificity TN / (TN + FP)."""
    return _one("specificity", pred, target, None, roi)


def precision(pred: Any, target: Any, *, roi: Any = None) -> float:
    """Precision TP / (TP + FP); nan when the prediction is empty and the target is not."""
    return _one("precision", pred, target, None, roi)


def accuracy(pred: Any, target: Any, *, roi: Any = None) -> float:
    """Pixel accuracy (TP + TN) / N."""
    return _one("accuracy", pred, target, None, roi)
