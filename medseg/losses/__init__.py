"""The segmentation loss zoo. Build losses by name: ``build_loss("dice_ce", mode="multiclass")``.

Weighted sums are written ``"dice:1+focal:0.5"``. Every loss is an ``nn.Module`` called as
``loss(logits, target, **extras)``; ``loss.needs`` lists the extra batch keys it consumes and
``loss.uses_aux`` says whether it wants ``aux=`` from ``model.forward_aux``. See docs/losses.md.
"""

from __future__ import annotations

from medseg.losses import (  # noqa: F401  (registers the losses)
    compound,
    deep_supervision,
    distribution,
    edge,
    lovasz,
    region,
    regions,
)
from medseg.losses.base import MODES, SegLoss
from medseg.losses.compound import (
    AuxiliaryLoss,
    BCEDiceLoss,
    ComboLoss,
    DeepSupervision,
    DiceCELoss,
    WeightedSum,
    with_auxiliary,
)
from medseg.losses.distribution import CrossEntropyLoss, FocalLoss, UNetWeightedCELoss
from medseg.losses.edge import BEFUnetEdgeLoss, BEFUnetLoss, befunet_edge_loss
from medseg.losses.lovasz import LovaszHingeLoss, LovaszSoftmaxLoss
from medseg.losses.region import DiceLoss, FocalTverskyLoss, IoULoss, TverskyLoss
from medseg.losses.regions import RegionTargets
from medseg.losses.registry import LOSSES
from medseg.losses.spec import build_loss, list_losses, parse_spec

__all__ = [
    "LOSSES",
    "MODES",
    "AuxiliaryLoss",
    "BEFUnetEdgeLoss",
    "BEFUnetLoss",
    "LovaszHingeLoss",
    "LovaszSoftmaxLoss",
    "RegionTargets",
    "befunet_edge_loss",
    "BCEDiceLoss",
    "ComboLoss",
    "CrossEntropyLoss",
    "DeepSupervision",
    "DiceCELoss",
    "DiceLoss",
    "FocalLoss",
    "FocalTverskyLoss",
    "IoULoss",
    "SegLoss",
    "TverskyLoss",
    "UNetWeightedCELoss",
    "WeightedSum",
    "build_loss",
    "list_losses",
    "parse_spec",
    "with_auxiliary",
]
