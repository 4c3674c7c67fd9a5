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


def seed_compose(compose, seed: int) -> None:
    """Seed an albumentations ``Compose`` so that its transforms draw independently.

    ``Compose.set_random_seed`` gives every child the same seed, so all children draw the same
    first number and their ``p`` decisions coincide (with p = 0.5 and 0.3, the second is applied
    only together with the first). Each child gets its own seed derived from ``(seed, i)``.
    """
    compose.set_random_seed(seed)
    for i, transform in enumerate(compose.transforms):
        transform.set_random_seed(
            int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, i]).generate_state(1)[0])
        )


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
    if aug.preset == "nnunet":
        return nnunet_transforms()
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


def _bg_sample(rng: np.random.Generator, low: float, high: float) -> float:
    """nnU-Net's draw for a factor range around 1: half the time below 1, half above."""
    if low < 1 < high and rng.random() < 0.5:
        return float(rng.uniform(low, 1.0))
    if low < 1 < high:
        return float(rng.uniform(1.0, high))
    return float(rng.uniform(low, high))


def _intensity_transform(name: str, apply_fn: Callable[[np.ndarray, np.random.Generator], np.ndarray]):
    """An albumentations image-only transform, seeded by its Compose, that calls ``apply_fn(img, rng)``."""
    import albumentations as A

    class _Seeded(A.ImageOnlyTransform):
        def get_params(self) -> dict:
            return {"seed": self.py_random.getrandbits(32)}

        def apply(self, img: np.ndarray, seed: int = 0, **params) -> np.ndarray:
            return apply_fn(img, np.random.default_rng(seed)).astype(img.dtype, copy=False)

    _Seeded.__name__ = _Seeded.__qualname__ = name
    return _Seeded


def _centred_contrast(img: np.ndarray, rng: np.random.Generator, low=0.75, high=1.25) -> np.ndarray:
    """Contrast about each channel's mean, range preserved (nnU-Net ``ContrastTransform``)."""
    flat = img.astype(np.float32).reshape(-1, img.shape[-1] if img.ndim == 3 else 1)
    for c in range(flat.shape[1]):
        ch = flat[:, c]
        lo, hi, mean = ch.min(), ch.max(), ch.mean()
        flat[:, c] = np.clip((ch - mean) * _bg_sample(rng, low, high) + mean, lo, hi)
    return flat.reshape(img.shape)


def _gamma(img: np.ndarray, rng: np.random.Generator, invert: bool, low=0.7, high=1.5) -> np.ndarray:
    """Gamma on each channel rescaled to [0, 1] (optionally on the inverted image), then the
    channel's mean and std restored (nnU-Net ``GammaTransform`` with ``p_retain_stats=1``)."""
    flat = img.astype(np.float32).reshape(-1, img.shape[-1] if img.ndim == 3 else 1)
    for c in range(flat.shape[1]):
        ch = flat[:, c]
        lo, span, mean, std = ch.min(), max(float(np.ptp(ch)), 1e-7), ch.mean(), ch.std()
        u = (ch - lo) / span
        u = 1 - (1 - u) ** _bg_sample(rng, low, high) if invert else u ** _bg_sample(rng, low, high)
        g = u * span + lo
        flat[:, c] = (g - g.mean()) / max(float(g.std()), 1e-7) * std + mean
    return flat.reshape(img.shape)


def nnunet_transforms() -> list:
    """nnU-Net v2's default 2-D training augmentation (Isensee et al. 2021, supplementary
    "data augmentation"), in the order and with the probabilities it uses, on [0, 1] images:
    rotation +-180 deg (p 0.2), scaling 0.7-1.4 (p 0.2), Gaussian noise (p 0.1), Gaussian blur
    sigma 0.5-1 (p 0.2), multiplicative brightness 0.75-1.25 (p 0.15), contrast 0.75-1.25
    (p 0.15), simulated low resolution 0.5-1 (p 0.25), gamma 0.7-1.5 on the inverted (p 0.1) and
    the plain image (p 0.3), mirroring of both axes (p 0.5 each).

    Differences: medseg augments [0, 1] images before the z-score, so the noise standard
    deviation is given on that scale (0-0.05, about nnU-Net's variance 0-0.1 of z-scored data
    for a channel std of 0.15); blur and low resolution act on all channels together; corners
    brought in by rotation are ignored by the loss (``roi``) instead of padded with background.
    """
    import albumentations as A

    affine = dict(
        interpolation=cv2.INTER_LINEAR,
        mask_interpolation=cv2.INTER_NEAREST,
        border_mode=cv2.BORDER_CONSTANT,
        fill=0,
        fill_mask=0,
    )
    contrast = _intensity_transform("CentredContrast", _centred_contrast)
    inv_gamma = _intensity_transform("InvertedGamma", lambda im, rng: _gamma(im, rng, True))
    gamma = _intensity_transform("RetainedGamma", lambda im, rng: _gamma(im, rng, False))
    return [
        A.Affine(rotate=(-180, 180), p=0.2, **affine),
        A.Affine(scale=(0.7, 1.4), p=0.2, **affine),
        A.GaussNoise(std_range=(0.0, 0.05), per_channel=True, p=0.1),
        A.GaussianBlur(blur_limit=0, sigma_limit=(0.5, 1.0), p=0.2),
        A.MultiplicativeNoise(multiplier=(0.75, 1.25), per_channel=True, elementwise=False, p=0.15),
        contrast(p=0.15),
        A.Downscale(
            scale_range=(0.5, 1.0),
            interpolation_pair={"downscale": cv2.INTER_NEAREST, "upscale": cv2.INTER_CUBIC},
            p=0.25,
        ),
        inv_gamma(p=0.1),
        gamma(p=0.3),
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
    ]


class TrainTransform:
    """Seeded joint transform of ``image`` [H, W, C], ``mask`` [H, W] uint8 and ``roi`` [H, W] uint8."""

    def __init__(self, cfg: DataConfig, aug: AugmentConfig) -> None:
        import albumentations as A

        # 90-degree rotations come before the size policy so that non-square sizes keep their shape
        pre = (
            [A.RandomRotate90(p=aug.rot90)]
            if aug.enabled and aug.rot90 > 0 and aug.preset == "custom"
            else []
        )
        self.size = A.Compose(pre + _size_transforms(cfg), additional_targets={"roi": "mask"}, seed=0)
        self.stretch = cfg.resize_policy == "resize"
        augs = _aug_transforms(aug)
        self.aug = A.Compose(augs, additional_targets={"roi": "mask"}, seed=0) if augs else None

    def resize(self, image: np.ndarray, mask: np.ndarray, roi: np.ndarray | None, seed: int):
        """Size policy; ``roi=None`` means the whole image is valid."""
        seed_compose(self.size, seed)
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
        seed_compose(self.aug, seed)
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
