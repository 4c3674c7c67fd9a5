"""Planning: a training configuration decided from the data set's fingerprint (``medseg plan``)."""

from medseg.plan.planner import Decision, Plan, plan_dataset
from medseg.plan.report import plan_json, plan_table, plan_yaml, write_plan
from medseg.plan.spacing import anisotropy, target_spacing

__all__ = [
    "Decision",
    "Plan",
    "anisotropy",
    "plan_dataset",
    "plan_json",
    "plan_table",
    "plan_yaml",
    "target_spacing",
    "write_plan",
]
