"""3-D patch augmentation in torch/numpy: mirroring on every axis, in-plane rot90, rotation and
scaling by one resampling (``affine_grid`` + ``grid_sample``), then brightness, contrast, gamma
and Gaussian noise. Image, label and region mask move together.

The spatial part follows nnU-Net's 3-D augmentation (Isensee et al., Nature Methods 18:203,
2021, supplementary "Data augmentation"): rotation and scaling are applied as one affine map
from the output patch to the source volume, sampled trilinearly for the image and by nearest
neighbour for the labels; for anisotropic patches (largest side > 3 x the first) rotation and
scaling stay in-plane ("dummy 2-D" augmentation), as nnU-Net does for thick-slice data. The
source region is cut from the volume large enough for the rotated, scaled patch, so no border
artefact appears inside the patch.

Why our own code rather than batchgeneratorsv2 or MONAI: measured in ``bench/patch_loader.py``
(``docs/bench/volumes.md``); the functions here depend on nothing but numpy and torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medseg.data.config import AugmentConfig
from medseg.data.patches import crop_padded

ANISOTROPY_RATIO = 3.0  # nnU-Net: in-plane-only spatial augmentation beyond this patch ratio


@dataclass(frozen=True)
class Augment3D:
    """Probabilities and ranges of the 3-D patch augmentation (all per sample)."""

    flip: tuple[float, float, float] = (0.5, 0.5, 0.5)  # per axis D, H, W
    rot90: float = 0.0  # in-plane multiples of 90 degrees (square in-plane patches only)
    affine: float = 0.2
    rotate_limit: float = 30.0  # degrees
    scale: tuple[float, float] = (0.7, 1.4)
    inplane_only: bool = False
    brightness_contrast: float = 0.15
    brightness: float = 0.1
    contrast: float = 0.25
    gamma: float = 0.3
    gamma_limit: tuple[float, float] = (0.7, 1.5)
    noise: float = 0.1
    noise_std: float = 0.05
    enabled: bool = True

    @classmethod
    def from_config(cls, aug: AugmentConfig, patch_size: Sequence[int]) -> Augment3D:
        """``augment.*`` for patches: hflip/vflip/dflip mirror W/H/D; preset ``nnunet`` gives
        nnU-Net's 3-D defaults (rotation +-30 degrees, scaling 0.7-1.4, mirroring on all axes)."""
        inplane = max(patch_size) > ANISOTROPY_RATIO * patch_size[0]
        if aug.preset == "nnunet":
            return cls(inplane_only=inplane, enabled=aug.enabled)
        return cls(
            flip=(aug.dflip, aug.vflip, aug.hflip),
            rot90=aug.rot90,
            affine=aug.affine,
            rotate_limit=aug.rotate_limit,
            scale=aug.scale,
            inplane_only=inplane,
            brightness_contrast=aug.brightness_contrast,
            brightness=aug.brightness,
            contrast=aug.contrast,
            gamma=aug.gamma,
            gamma_limit=aug.gamma_limit,
            noise=aug.noise,
            noise_std=aug.noise_std,
            enabled=aug.enabled,
        )

    def draw_matrix(self, rng: np.random.Generator) -> np.ndarray | None:
        """The 3 x 3 map from output-patch offsets to source offsets (voxels, axes D, H, W), or
        None when no rotation/scaling is applied to this sample."""
        if not self.enabled or rng.random() >= self.affine:
            return None
        s = float(np.exp(rng.uniform(math.log(self.scale[0]), math.log(self.scale[1]))))
        limit = math.radians(self.rotate_limit)
        if self.inplane_only:
            rot = _rotation(float(rng.uniform(-limit, limit)), 1, 2)
            zoom = np.diag([1.0, 1.0 / s, 1.0 / s])
        else:
            angles = rng.uniform(-limit, limit, size=3)
            rot = _rotation(angles[0], 1, 2) @ _rotation(angles[1], 0, 2) @ _rotation(angles[2], 0, 1)
            zoom = np.eye(3) / s
        return rot @ zoom


def _rotation(angle: float, a: int, b: int) -> np.ndarray:
    """Rotation by ``angle`` in the plane of axes ``a`` and ``b``."""
    m = np.eye(3)
    c, s = math.cos(angle), math.sin(angle)
    m[a, a], m[a, b], m[b, a], m[b, b] = c, -s, s, c
    return m


def source_box(
    corner: Sequence[int], size: Sequence[int], matrix: np.ndarray | None
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Corner and size of the source region that the patch at ``corner`` of ``size`` reads
    after ``matrix`` (rotation/scaling about the patch centre); the patch itself without one."""
    if matrix is None:
        return tuple(int(c) for c in corner), tuple(int(s) for s in size)
    half = (np.asarray(size, float) - 1) / 2
    centre = np.asarray(corner, float) + half
    reach = np.abs(matrix) @ half + 1  # farthest source offset a patch voxel maps to, + 1 for interpolation
    lo = np.floor(centre - reach).astype(int)
    hi = np.ceil(centre + reach).astype(int) + 1
    return tuple(int(v) for v in lo), tuple(int(v) for v in hi - lo)


def sampling_grid(
    matrix: np.ndarray, out_size: Sequence[int], src_corner: Sequence[int], src_size: Sequence[int], centre
) -> torch.Tensor:
    """``grid_sample`` grid ``[1, *out_size, 3]`` (x, y, z = W, H, D, align_corners=True) that
    reads source voxel ``centre + matrix @ (o - out_centre)`` for output voxel ``o``."""
    axes = [torch.arange(n, dtype=torch.float64) - (n - 1) / 2 for n in out_size]
    offs = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)  # [D, H, W, 3]
    src = offs @ torch.as_tensor(matrix, dtype=torch.float64).T
    src = src + torch.as_tensor(np.asarray(centre, float) - np.asarray(src_corner, float))
    extent = torch.as_tensor([max(n - 1, 1) for n in src_size], dtype=torch.float64)
    norm = 2 * src / extent - 1
    return norm.flip(-1).to(torch.float32)[None]


def warp(
    image: np.ndarray, mask: np.ndarray, roi: np.ndarray, grid: torch.Tensor
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resample ``image`` ``[C, *src]`` (trilinear) and ``mask``/``roi`` ``[*src]`` (nearest) on ``grid``."""
    img = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
    out = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=True)[0]
    both = torch.from_numpy(np.stack([mask.astype(np.float32), roi.astype(np.float32)]))[None]
    lab = F.grid_sample(both, grid, mode="nearest", padding_mode="zeros", align_corners=True)[0]
    return out.numpy(), lab[0].numpy().astype(np.int64), lab[1].numpy() > 0.5


def spatial_patch(
    image: np.ndarray,
    mask: np.ndarray,
    roi: np.ndarray,
    corner: Sequence[int],
    size: Sequence[int],
    matrix: np.ndarray | None,
    pad_value: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The patch at ``corner`` of ``size`` from ``image`` ``[C, D, H, W]``, ``mask`` and ``roi``
    ``[D, H, W]``, rotated/scaled about its centre by ``matrix``; outside the volume the image
    is ``pad_value``, the label 0 and the ROI False."""
    src_corner, src_size = source_box(corner, size, matrix)
    img = crop_padded(image, src_corner, src_size, pad_value)
    lab = crop_padded(mask, src_corner, src_size, 0)
    inside = crop_padded(roi, src_corner, src_size, False)
    if matrix is None:
        return img, lab.astype(np.int64), inside
    centre = np.asarray(corner, float) + (np.asarray(size, float) - 1) / 2
    return warp(img, lab, inside, sampling_grid(matrix, size, src_corner, src_size, centre))


def mirror_and_rot90(arrays: list[np.ndarray], aug: Augment3D, rng: np.random.Generator) -> list[np.ndarray]:
    """Flip each spatial axis with its probability, then rotate in-plane by k x 90 degrees
    (square in-plane only); the last three axes of every array are D, H, W."""
    if not aug.enabled:
        return arrays
    for axis, p in zip((-3, -2, -1), aug.flip):
        if rng.random() < p:
            arrays = [np.flip(a, axis) for a in arrays]
    if aug.rot90 and arrays[0].shape[-1] == arrays[0].shape[-2] and rng.random() < aug.rot90:
        k = int(rng.integers(1, 4))
        arrays = [np.rot90(a, k, axes=(-2, -1)) for a in arrays]
    return [np.ascontiguousarray(a) for a in arrays]


def intensity(unit: np.ndarray, aug: Augment3D, rng: np.random.Generator) -> np.ndarray:
    """Brightness/contrast, gamma and Gaussian noise on a ``[0, 1]`` patch ``[C, ...]``."""
    if not aug.enabled:
        return unit
    x = unit.astype(np.float32, copy=True)
    if rng.random() < aug.brightness_contrast:
        c = rng.uniform(1 - aug.contrast, 1 + aug.contrast)
        b = rng.uniform(-aug.brightness, aug.brightness)
        mean = x.mean(axis=tuple(range(1, x.ndim)), keepdims=True)
        x = (x - mean) * np.float32(c) + mean + np.float32(b)
    if rng.random() < aug.gamma:
        g = float(np.exp(rng.uniform(math.log(aug.gamma_limit[0]), math.log(aug.gamma_limit[1]))))
        x = np.power(np.clip(x, 0.0, 1.0), np.float32(g))
    if rng.random() < aug.noise:
        x = x + rng.normal(0.0, aug.noise_std, size=x.shape).astype(np.float32)
    return x
