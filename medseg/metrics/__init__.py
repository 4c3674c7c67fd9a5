"""Segmentation metrics: overlap and surface metrics per case and class, empty-case policies, reports.

Binary-mask functions take numpy arrays or torch tensors of any dimensionality and return floats;
:func:`evaluate_case` evaluates label maps per class. Definitions: docs/metrics.md.
"""

from medseg.metrics.case import HIGHER_IS_BETTER, METRICS, evaluate_case, evaluate_volume, stack_slices
from medseg.metrics.empty import EmptyPolicy, resolve_empty
from medseg.metrics.overlap import (
    OVERLAP_METRICS,
    accuracy,
    binary_confusion,
    dice,
    iou,
    overlap_from_counts,
    precision,
    recall,
    sensitivity,
    specificity,
)
from medseg.metrics.surface import (
    SURFACE_METRICS,
    SurfaceDistances,
    assd,
    hausdorff,
    hd95,
    nsd,
    surface_distances,
    surface_metrics,
)


def __getattr__(name: str):
    # the report layer pulls in matplotlib and rich: load it only when asked for
    if name in ("case_records", "summarize", "summary_table", "write_report", "worst_cases", "read_records"):
        from medseg.metrics import report

        return getattr(report, name)
    if name == "compare_runs":
        from medseg.metrics.compare import compare_runs

        return compare_runs
    raise AttributeError(f"module 'medseg.metrics' has no attribute {name!r}")


__all__ = [
    "METRICS",
    "OVERLAP_METRICS",
    "SURFACE_METRICS",
    "HIGHER_IS_BETTER",
    "EmptyPolicy",
    "SurfaceDistances",
    "accuracy",
    "assd",
    "binary_confusion",
    "case_records",
    "compare_runs",
    "dice",
    "evaluate_case",
    "evaluate_volume",
    "hausdorff",
    "hd95",
    "iou",
    "nsd",
    "overlap_from_counts",
    "precision",
    "read_records",
    "recall",
    "resolve_empty",
    "sensitivity",
    "specificity",
    "stack_slices",
    "summarize",
    "summary_table",
    "surface_distances",
    "surface_metrics",
    "worst_cases",
    "write_report",
]
