"""Which spatial axes test-time mirroring flips: the axes the model saw mirrored in training.

A network trained with horizontal flips has learnt that a mirrored lesion is still a lesion; one
trained without vertical flips has not (an ultrasound image upside down puts the probe at the
bottom). So ``eval.tta`` averages the probabilities over every combination of flips of the axes
that ``augment`` mirrored, as nnU-Net does (its inference mirrors the axes its training
augmentation mirrored). Axes are spatial: ``(H, W)`` for 2-D models, ``(D, H, W)`` for 3-D.

- ``augment.preset: nnunet``: every axis (nnU-Net's mirroring of all axes; in 2-D also its
  rotation of up to 180 degrees).
- ``custom``: W with ``hflip``, H with ``vflip``, D (3-D) with ``dflip``; a 90-degree rotation
  together with an in-plane flip makes every in-plane orientation reachable, so both in-plane
  axes.
- Augmentation off or no axis mirrored: every axis, so that ``--tta`` asked for explicitly still
  mirrors (the behaviour before the rule).
"""

from __future__ import annotations

from medseg.config import Config
from medseg.data.config import AugmentConfig


def trained_mirror_axes(aug: AugmentConfig, n_spatial: int) -> tuple[int, ...]:
    """Spatial axes (0-based, of ``n_spatial``) that ``aug`` mirrors during training."""
    if n_spatial not in (2, 3):
        raise ValueError(f"mirroring axes are defined for 2 or 3 spatial axes, got {n_spatial}")
    if not aug.enabled:
        return ()
    if aug.preset == "nnunet":
        return tuple(range(n_spatial))
    h, w = n_spatial - 2, n_spatial - 1
    axes = {a for a, p in ((w, aug.hflip), (h, aug.vflip)) if p > 0}
    if axes and aug.rot90 > 0:
        axes = {h, w}
    if n_spatial == 3 and aug.dflip > 0:
        axes.add(0)
    return tuple(sorted(axes))


def tta_axes(cfg: Config, n_spatial: int) -> tuple[int, ...]:
    """The axes ``eval.tta`` mirrors for a model of ``cfg``: those mirrored in training, or every
    axis when training mirrored none (see the module docstring)."""
    return trained_mirror_axes(cfg.augment, n_spatial) or tuple(range(n_spatial))
