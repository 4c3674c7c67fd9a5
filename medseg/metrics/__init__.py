"""Segmentation metrics: overlap and surface metrics per case and class, empty-case policies, reports.

Binary-mask functions take numpy arrays or torch tensors of any dimensionality and return floats;
:func:`evaluate_case` evaluates label maps per class; :func:`write_report` writes the per-case
and summary files of an evaluation and :func:`compare_runs` compares two of them case by case.
Definitions: docs/metrics.md.

Every name here is a plain import (matplotlib and scipy.stats load inside the functions that
draw figures or run the Wilcoxon test).
"""

from medseg.metrics.case import HIGHER_IS_BETTER, METRICS, evaluate_case, evaluate_volume, stack_slices
from medseg.metrics.compare import compare_runs, paired_stats
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
from medseg.metrics.records import read_records
from medseg.metrics.regions import evaluate_regions
from medseg.metrics.report import case_records, summarize, summary_table, worst_cases, write_report
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

__all__ = [
    "evaluate_regions",
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
    "paired_stats",
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
