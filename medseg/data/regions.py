"""Region-based (multilabel) targets for nested labels, as nnU-Net's region-based training.

A *region* is a set of label values, e.g. for BraTS whole tumour ``{1, 2, 3}``, tumour core
``{2, 3}`` and enhancing tumour ``{3}`` (Isensee et al. 2021, Nat. Methods 18:203, "region-based
training"; Wacker et al. 2020 for BraTS). The model has one sigmoid output per region; its
target for region ``r`` is ``label in r``. A prediction goes back to a label map by painting
each region's thresholded mask, in order, with the region's own label (the label that no
later region holds): later regions overwrite earlier ones, so nested regions listed from the
largest to the smallest give back the label map exactly (nnU-Net's ``regions_class_order``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from medseg.constants import IGNORE_INDEX
from medseg.errors import ConfigError

Regions = tuple[tuple[int, ...], ...]


def parse_regions(regions: Mapping[str, Sequence[int]], num_classes: int) -> tuple[tuple[str, ...], Regions]:
    """Region names and label sets from ``data.regions`` (``{name: [labels]}``), checked
    against a dataset of ``num_classes`` classes (labels ``1..num_classes-1``)."""
    if not regions:
        raise ConfigError("data.regions is empty: give at least one region, e.g. {lesion: [1]}")
    names, sets = [], []
    for name, labels in regions.items():
        values = tuple(sorted({int(v) for v in labels}))
        if not values:
            raise ConfigError(f"data.regions.{name}: a region needs at least one label")
        bad = [v for v in values if not 1 <= v < num_classes]
        if bad:
            raise ConfigError(
                f"data.regions.{name}: label {bad[0]} is not a foreground label of this dataset "
                f"(1..{num_classes - 1}; background 0 is never part of a region)"
            )
        names.append(str(name))
        sets.append(values)
    if len(set(sets)) != len(sets):
        raise ConfigError("data.regions: two regions hold the same labels")
    region_labels(tuple(sets))  # every region must keep a label of its own
    return tuple(names), tuple(sets)


def default_regions(num_classes: int) -> tuple[tuple[str, ...], Regions]:
    """One region per foreground class (``loss.mode: multilabel`` without ``data.regions``)."""
    return tuple(f"class{k}" for k in range(1, num_classes)), tuple((k,) for k in range(1, num_classes))


def region_labels(regions: Regions) -> tuple[int, ...]:
    """The label each region paints when converting back: its smallest label held by no later
    region. A region wholly covered by later ones could never be seen, which is refused."""
    out = []
    for i, region in enumerate(regions):
        later = set().union(*regions[i + 1 :]) if i + 1 < len(regions) else set()
        own = sorted(set(region) - later)
        if not own:
            raise ConfigError(
                f"data.regions: region {list(region)} is covered by the regions after it; "
                "list nested regions from the largest to the smallest"
            )
        out.append(own[0])
    return tuple(out)


def region_targets(
    labels: torch.Tensor, regions: Regions, ignore_index: int | None = IGNORE_INDEX
) -> torch.Tensor:
    """``[B, *S]`` integer label map -> ``[B, R, *S]`` float region targets (1 inside region
    ``r``); pixels equal to ``ignore_index`` hold ``ignore_index`` in every channel."""
    if labels.is_floating_point():
        raise TypeError(f"region targets need an integer label map; got {labels.dtype}")
    channels = []
    for region in regions:
        inside = torch.zeros_like(labels, dtype=torch.bool)
        for v in region:
            inside |= labels == v
        channels.append(inside)
    out = torch.stack(channels, 1).float()
    if ignore_index is not None:
        out.masked_fill_((labels == ignore_index).unsqueeze(1), float(ignore_index))
    return out


def regions_to_labels(masks: np.ndarray | torch.Tensor, regions: Regions, axis: int = 0) -> np.ndarray:
    """Boolean region masks (regions along ``axis``) -> label map (uint8 while labels < 256),
    later regions painted over earlier ones with :func:`region_labels`."""
    m = masks.numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
    m = np.moveaxis(m, axis, 0)
    if m.shape[0] != len(regions):
        raise ValueError(f"{m.shape[0]} region masks for {len(regions)} regions")
    labels = region_labels(regions)
    out = np.zeros(m.shape[1:], np.uint8 if max(labels, default=0) < 256 else np.int32)
    for mask, label in zip(m, labels):
        out[mask.astype(bool)] = label
    return out


def region_masks(labels: np.ndarray, regions: Regions) -> list[np.ndarray]:
    """Boolean mask of each region in a label map (``np.isin``), for metrics per region."""
    return [np.isin(labels, region) for region in regions]
