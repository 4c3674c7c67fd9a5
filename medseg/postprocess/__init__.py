"""Post-processing of label maps: connected-component clean-up, decided on out-of-fold predictions.

:mod:`~medseg.postprocess.components` holds the operations (2D and 3D),
:mod:`~medseg.postprocess.decide` the rule that keeps a step only when it raises the mean Dice
(nnU-Net; Isensee et al., Nature Methods 2021), :mod:`~medseg.postprocess.plan` the JSON plan
a run saves and ``predict`` / ``evaluate`` apply.
"""

from medseg.postprocess.components import (
    component_sizes,
    drop_small_components,
    keep_largest_foreground,
    keep_largest_per_class,
    largest_component,
    remove_small_per_class,
)
from medseg.postprocess.decide import class_dice, decide_postprocessing
from medseg.postprocess.plan import PLAN_FILE, PostprocessPlan, Step

__all__ = [
    "PLAN_FILE",
    "PostprocessPlan",
    "Step",
    "class_dice",
    "component_sizes",
    "decide_postprocessing",
    "drop_small_components",
    "keep_largest_foreground",
    "keep_largest_per_class",
    "largest_component",
    "remove_small_per_class",
]
