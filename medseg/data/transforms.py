"""Training augmentation and the train/eval size policy.

Image, mask and region-of-interest mask go through the same geometric transforms
(albumentations 2: the masks with nearest-neighbour interpolation). Pixels that a
transform brings in from outside the image (padding, rotated corners) get
``roi = False`` so the loss ignores them. Every sample is seeded from
``(seed, epoch, index)``, so results do not depend on worker count or resumption.

Order: (1) 90-degree rotation and size policy on the raw image (resize / letterbox / random crop),
(2) scaling to [0, 1], (3) geometric + intensity augmentation in [0, 1],
(4) normalisation with statistics of the whole source image or volume (done by the
dataset, so brightness/contrast jitter is not undone by a per-crop z-score).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from medseg.data.config import AugmentConfig, DataConfig


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for one sample, independent of worker count and order."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(index)]).generate_state(1)[0])


def _size_transforms(cfg: DataConfig) -> list:
    import albumentations as A

    h, w = cfg.size
    if cfg.resize_policy == "resize":
        return [
            A.Resize(
                h,
                w,
                interpolation=cv2.INTER_LINEAR,
                area_for_downscale="image",
                mask_interpolation=cv2.INTER_NEAREST_EXACT,
            )
        ]
    if cfg.resize_policy == "pad":
        return [
            A.LongestMaxSize(
                max_size_hw=(h, w),
                interpolation=cv2.INTER_LINEAR,
                area_for_downscale="image",
                mask_interpolation=cv2.INTER_NEAREST_EXACT,
            ),
            A.PadIfNeeded(h, w, position="center", border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0),
        ]
    return [
        A.PadIfNeeded(h, w, position="center", border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0),
        A.RandomCrop(h, w),
    ]


def _aug_transforms(aug: AugmentConfig) -> list:
    import albumentations as A

    if not aug.enabled:
        return []
    t: list = []
    if aug.hflip > 0:
        t.append(A.HorizontalFlip(p=aug.hflip))
    if aug.vflip > 0:
        t.append(A.VerticalFlip(p=aug.vflip))
    if aug.affine > 0 and (aug.rotate_limit > 0 or aug.scale != (1.0, 1.0)):
        t.append(
            A.Affine(
                rotate=(-aug.rotate_limit, aug.rotate_limit),
                scale=aug.scale,
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=0,
                p=aug.affine,
            )
        )
    if aug.elastic > 0:
        t.append(
            A.ElasticTransform(
                alpha=aug.elastic_alpha,
                sigma=aug.elastic_sigma,
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=0,
                p=aug.elastic,
            )
        )
    if aug.brightness_contrast > 0 and (aug.brightness > 0 or aug.contrast > 0):
        t.append(
            A.RandomBrightnessContrast(
                brightness_limit=aug.brightness, contrast_limit=aug.contrast, p=aug.brightness_contrast
            )
        )
    if aug.gamma > 0:
        lo, hi = aug.gamma_limit
        t.append(A.RandomGamma(gamma_limit=(lo * 100, hi * 100), p=aug.gamma))
    if aug.noise > 0 and aug.noise_std > 0:
        t.append(A.GaussNoise(std_range=(aug.noise_std, aug.noise_std), p=aug.noise))
    return t


class TrainTransform:
    """Seeded joint transform of ``image`` [H, W, C], ``mask`` [H, W] uint8 and ``roi`` [H, W] uint8."""

    def __init__(self, cfg: DataConfig, aug: AugmentConfig) -> None:
        import albumentations as A

        # 90-degree rotations come before the size policy so that non-square sizes keep their shape
        pre = [A.RandomRotate90(p=aug.rot90)] if aug.enabled and aug.rot90 > 0 else []
        self.size = A.Compose(pre + _size_transforms(cfg), additional_targets={"roi": "mask"}, seed=0)
        self.stretch = cfg.resize_policy == "resize"
        augs = _aug_transforms(aug)
        self.aug = A.Compose(augs, additional_targets={"roi": "mask"}, seed=0) if augs else None

    def resize(self, image: np.ndarray, mask: np.ndarray, roi: np.ndarray | None, seed: int):
        """Size policy; ``roi=None`` means the whole image is valid."""
        self.size.set_random_seed(seed)
        if roi is None and self.stretch:  # a resized all-valid roi stays all-valid: skip the work
            out = self.size(image=image, mask=mask)
            return out["image"], out["mask"], np.ones(out["mask"].shape, np.uint8)
        if roi is None:
            roi = np.ones(mask.shape, np.uint8)
        out = self.size(image=image, mask=mask, roi=roi)
        return out["image"], out["mask"], out["roi"]

    def augment(self, image01: np.ndarray, mask: np.ndarray, roi: np.ndarray, seed: int):
        if self.aug is None:
            return image01, mask, roi
        self.aug.set_random_seed(seed)
        out = self.aug(image=image01, mask=mask, roi=roi)
        image = out["image"]
        if image.ndim == 2:
            image = image[:, :, None]
        return np.clip(image, 0.0, 1.0, out=image), out["mask"], out["roi"]


def model_input_size(height: int, width: int, cfg: DataConfig) -> tuple[int, int]:
    """The size at which a native ``height x width`` image is fed to a model trained with ``cfg``."""
    h, w = cfg.size
    if cfg.resize_policy == "resize":
        return h, w
    if cfg.resize_policy == "pad":
        s = min(h / height, w / width)
        return max(1, round(height * s)), max(1, round(width * s))
    return height, width


def to_model_space(
    image: torch.Tensor, cfg: DataConfig
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """Bring a native-resolution case image ``[B, C, H, W]`` to the scale the model was trained at.

    Returns the resized image and ``undo(probs [B, K, h, w]) -> [B, K, H, W]`` (bilinear). With
    ``resize_policy='crop'`` the model was trained at native resolution: nothing changes and the
    evaluator should use a sliding window of ``cfg.size``.
    """
    H, W = image.shape[-2:]
    h, w = model_input_size(H, W, cfg)
    if (h, w) == (H, W):
        return image, lambda p: p
    x = F.interpolate(image, size=(h, w), mode="bilinear", align_corners=False, antialias=h < H or w < W)

    def undo(p: torch.Tensor) -> torch.Tensor:
        return F.interpolate(p, size=(H, W), mode="bilinear", align_corners=False)

    return x, undo
