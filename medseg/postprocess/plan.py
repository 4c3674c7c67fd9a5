"""A post-processing plan: the connected-component steps a run decided on, as JSON.

Saved with the run (``postprocessing.json``), applied by ``predict`` and ``evaluate`` and
recorded in their reports. Steps run in order:

- ``largest_foreground``: the listed classes together form one foreground; keep its largest
  component (:func:`~medseg.postprocess.components.keep_largest_foreground`).
- ``largest_class``: keep the largest component of each listed class.
- ``remove_small``: remove the components of the listed classes smaller than ``min_size`` voxels.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from medseg.atomic import atomic_write_text
from medseg.errors import DataError
from medseg.postprocess.components import (
    keep_largest_foreground,
    keep_largest_per_class,
    remove_small_per_class,
)

StepKind = Literal["largest_foreground", "largest_class", "remove_small"]
KINDS = ("largest_foreground", "largest_class", "remove_small")
PLAN_FILE = "postprocessing.json"
FORMAT = "medseg-postprocessing/1"


@dataclass(frozen=True)
class Step:
    """One clean-up step on the classes ``classes`` (``min_size`` only for ``remove_small``)."""

    kind: StepKind
    classes: tuple[int, ...]
    min_size: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown post-processing step {self.kind!r}; choose one of {KINDS}")
        if (self.kind == "remove_small") != (self.min_size is not None):
            raise ValueError("min_size is given for (and only for) a 'remove_small' step")

    def apply(self, labels: np.ndarray, connectivity: int | None = None) -> np.ndarray:
        if self.kind == "largest_foreground":
            return keep_largest_foreground(labels, self.classes, connectivity)
        if self.kind == "largest_class":
            return keep_largest_per_class(labels, self.classes, connectivity)
        assert self.min_size is not None
        return remove_small_per_class(labels, {c: self.min_size for c in self.classes}, connectivity)


@dataclass
class PostprocessPlan:
    """The accepted steps, the connectivity they use, and the record of the decision
    (``decision``: every step tried, with the mean Dice before and after, and whether it was kept)."""

    steps: list[Step] = field(default_factory=list)
    connectivity: int | None = None
    decision: list[dict[str, Any]] = field(default_factory=list)

    def apply(self, labels: np.ndarray) -> np.ndarray:
        """Run the steps on one label map (2D or 3D); with no steps, the map is returned as is."""
        out = np.asarray(labels)
        for step in self.steps:
            out = step.apply(out, self.connectivity)
        return out

    def describe(self) -> str:
        """One line for reports, e.g. ``largest_foreground[1,2]; remove_small[3]>=40 (connectivity 3)``."""
        if not self.steps:
            return "none"
        parts = [
            f"{s.kind}[{','.join(map(str, s.classes))}]"
            + (f">={s.min_size}" if s.min_size is not None else "")
            for s in self.steps
        ]
        return "; ".join(parts) + f" (connectivity {self.connectivity or 'full'})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "connectivity": self.connectivity,
            "steps": [{**asdict(s), "classes": list(s.classes)} for s in self.steps],
            "decision": self.decision,
        }

    @classmethod
    def from_dict(cls, doc: Any, source: str = "post-processing plan") -> PostprocessPlan:
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise DataError(f'{source}: not a medseg post-processing plan (expected "format": "{FORMAT}")')
        try:
            steps = [
                Step(s["kind"], tuple(int(c) for c in s["classes"]), s.get("min_size")) for s in doc["steps"]
            ]
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{source}: bad post-processing step ({e})") from None
        return cls(steps, doc.get("connectivity"), list(doc.get("decision", [])))

    def save(self, path: str | Path) -> Path:
        """Write the plan as JSON, atomically."""
        return atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> PostprocessPlan:
        p = Path(path)
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"{p}: post-processing plan not found") from None
        except (OSError, ValueError) as e:
            raise DataError(f"{p}: cannot read post-processing plan ({e})") from None
        return cls.from_dict(doc, str(p))
