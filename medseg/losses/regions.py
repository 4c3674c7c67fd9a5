"""Region-based training: a multilabel loss fed region targets built from the label map.

nnU-Net's region-based training (Isensee et al. 2021, Nat. Methods 18:203; BraTS: whole
tumour / tumour core / enhancing tumour) trains one sigmoid output per region against
``label in region``, with Dice + BCE per region. The data pipeline yields label maps
``[B, *S]``; :class:`RegionTargets` turns them into region targets ``[B, R, *S]``
(:func:`medseg.data.regions.region_targets`, ignored pixels ignored in every region) and calls
the wrapped ``multilabel`` loss. Deep-supervision and auxiliary wrappers inside it see region
targets, which they downsample like any multilabel mask.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from medseg.data.regions import Regions, region_targets


class RegionTargets(nn.Module):
    """``loss(logits [B, R, *S], labels [B, *S])`` = ``inner(logits, region_targets(labels))``.

    ``inner`` is a ``multilabel`` loss; a floating-point target of the logits' shape (region
    targets already) is passed on unchanged, an integer one is a label map.
    """

    def __init__(self, inner: nn.Module, regions: Regions, ignore_index: int | None = None) -> None:
        super().__init__()
        if getattr(inner, "mode", "multilabel") != "multilabel":
            raise ValueError(f"region targets need a multilabel loss; got mode {inner.mode!r}")
        self.inner = inner
        self.regions = tuple(tuple(int(v) for v in r) for r in regions)
        self.ignore_index = ignore_index
        self.needs = tuple(getattr(inner, "needs", ()))
        self.uses_aux = bool(getattr(inner, "uses_aux", False))

    def forward(self, logits: Tensor, target: Tensor, **extras: Any) -> Tensor:
        if logits.ndim >= 2 and logits.shape[1] != len(self.regions):
            raise ValueError(
                f"region loss: logits have {logits.shape[1]} channels for {len(self.regions)} regions"
            )
        if not (target.is_floating_point() and tuple(target.shape) == tuple(logits.shape)):
            if target.ndim == logits.ndim and target.shape[1] == 1:
                target = target[:, 0]
            target = region_targets(target, self.regions, self.ignore_index)
        return self.inner(logits, target, **extras)

    def extra_repr(self) -> str:
        return f"regions={[list(r) for r in self.regions]}, ignore_index={self.ignore_index}"


__all__ = ["RegionTargets"]
