"""Procedural medical-like phantoms: the built-in demo data (no download needed).

- ``binary``: dermoscopy-like RGB images, a skin texture with an illumination gradient,
  one or two irregular textured "lesions" (the foreground) and distractors that are
  not lesions (thin dark hairs, small dots).
- ``multiclass``: MRI-like grey slices, a body ellipse with a large organ, and a dark
  ring around a bright core (classes 1-3), with texture, a smooth multiplicative bias
  field and Gaussian noise.

Everything is drawn from ``numpy.random.default_rng([seed, index])``, so image ``k``
of a data set is the same whatever ``n`` is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

CLASS_NAMES = {"binary": ["background", "lesion"], "multiclass": ["background", "organ", "ring", "core"]}


def class_names(kind: str) -> list[str]:
    if kind not in CLASS_NAMES:
        raise ValueError(f"synthetic kind must be one of {sorted(CLASS_NAMES)}, got {kind!r}")
    return list(CLASS_NAMES[kind])


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    g = gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
    return (g - g.mean()) / (g.std() + 1e-8)


def _blob(
    rng: np.random.Generator,
    size: int,
    cy: float,
    cx: float,
    radius: float,
    aspect: float = 1.0,
    irregularity: float = 0.15,
) -> np.ndarray:
    """A star-shaped region: an ellipse whose radius varies with a few random harmonics."""
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    angle = rng.uniform(0, np.pi)
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) * aspect
    theta, dist = np.arctan2(v, u), np.hypot(u, v)
    r = np.ones_like(theta)
    for k in range(2, 6):
        r += rng.uniform(0, irregularity / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return dist < radius * r


def _binary(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    skin = np.array([0.86, 0.66, 0.56]) + rng.uniform(-0.06, 0.06, 3)
    img = np.ones((size, size, 3)) * skin
    img *= (1 + 0.04 * _smooth_noise(rng, size, size / 12))[..., None]
    yy, xx = np.mgrid[:size, :size] / size
    a = rng.uniform(0, 2 * np.pi)
    grad = 1 + rng.uniform(0.05, 0.15) * ((yy - 0.5) * np.sin(a) + (xx - 0.5) * np.cos(a))
    vignette = 1 - rng.uniform(0.1, 0.3) * ((yy - 0.5) ** 2 + (xx - 0.5) ** 2) * 2
    mask = np.zeros((size, size), bool)
    for k in range(1 if rng.random() < 0.7 else 2):
        r = size * (rng.uniform(0.12, 0.28) if k == 0 else rng.uniform(0.06, 0.12))
        cy, cx = rng.uniform(0.3, 0.7, 2) * size
        mask |= _blob(rng, size, cy, cx, r, rng.uniform(1.0, 1.6), 0.35)
    lesion = np.array([0.45, 0.28, 0.2]) * rng.uniform(0.8, 1.2) + rng.uniform(-0.05, 0.05, 3)
    lesion = lesion * (1 + 0.15 * _smooth_noise(rng, size, size / 24))[..., None]
    alpha = gaussian_filter(mask.astype(np.float64), 0.8)[..., None] * rng.uniform(0.75, 0.95)
    img = img * (1 - alpha) + lesion * alpha
    # distractors that are not lesions: thin hairs and small dots
    for _ in range(rng.integers(0, 4)):
        t = np.linspace(0, 1, 4 * size)
        p0, p1 = rng.uniform(0, size, 2), rng.uniform(0, size, 2)
        bend = rng.uniform(-0.2, 0.2) * size
        ys = p0[0] + (p1[0] - p0[0]) * t + bend * np.sin(np.pi * t)
        xs = p0[1] + (p1[1] - p0[1]) * t
        ok = (ys >= 0) & (ys < size) & (xs >= 0) & (xs < size)
        img[ys[ok].astype(int), xs[ok].astype(int)] *= 0.45
    for _ in range(rng.integers(0, 6)):
        cy, cx = rng.uniform(0, size, 2)
        img[_blob(rng, size, cy, cx, rng.uniform(0.8, 1.8), 1.0, 0.0)] *= 0.6
    img = img * (grad * vignette)[..., None] + rng.normal(0, 0.02, img.shape)
    return np.clip(img * 255, 0, 255).astype(np.uint8), mask.astype(np.uint8)


def _multiclass(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    label = np.zeros((size, size), np.uint8)
    img = np.full((size, size), 0.04)
    c = size / 2 + rng.uniform(-0.05, 0.05, 2) * size
    body = _blob(rng, size, c[0], c[1], size * rng.uniform(0.4, 0.46), rng.uniform(1.1, 1.4), 0.05)
    level = {
        0: rng.uniform(0.28, 0.36),
        1: rng.uniform(0.48, 0.58),
        2: rng.uniform(0.1, 0.18),
        3: rng.uniform(0.8, 0.9),
    }
    img[body] = level[0]
    organ = (
        _blob(
            rng,
            size,
            c[0] + rng.uniform(-0.12, 0.12) * size,
            c[1] + rng.uniform(-0.15, 0.0) * size,
            size * rng.uniform(0.16, 0.22),
            rng.uniform(1.0, 1.5),
            0.15,
        )
        & body
    )
    label[organ] = 1
    cy, cx = c[0] + rng.uniform(-0.1, 0.1) * size, c[1] + rng.uniform(0.05, 0.18) * size
    r_core = size * rng.uniform(0.08, 0.12)
    outer = _blob(rng, size, cy, cx, r_core + size * rng.uniform(0.035, 0.06), rng.uniform(1.0, 1.25), 0.08)
    label[outer & body] = 2
    core = _blob(rng, size, cy, cx, r_core, 1.0, 0.1) & outer
    label[core & body] = 3
    for k in (1, 2, 3):
        img[label == k] = level[k]
    img = gaussian_filter(img, 0.7)
    img *= 1 + 0.06 * _smooth_noise(rng, size, size / 20)
    bias = np.exp(rng.uniform(0.06, 0.14) * np.clip(_smooth_noise(rng, size, size / 3), -2, 2))
    img = img * bias + rng.normal(0, 0.035, img.shape)
    return np.clip(img * 255, 0, 255).astype(np.uint8)[..., None], label


def generate_phantom(kind: str, size: int, seed: int, index: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One phantom: image uint8 ``[H, W, C]`` (RGB for binary, grey for multiclass) and label uint8 ``[H, W]``."""
    class_names(kind)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(index)])
    return _binary(rng, size) if kind == "binary" else _multiclass(rng, size)


def generate_dataset(
    kind: str = "binary", n: int = 96, size: int = 96, seed: int = 0
) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """``n`` phantoms: (images, labels as class indices, class names)."""
    pairs = [generate_phantom(kind, size, seed, k) for k in range(n)]
    return [p[0] for p in pairs], [p[1] for p in pairs], class_names(kind)


def write_synthetic_dataset(
    out_dir: str | Path, kind: str = "binary", n: int = 96, size: int = 96, seed: int = 0
) -> Path:
    """Write a folder dataset (``images/*.png``, ``masks/*.png``, ``classes.txt``) of phantoms.

    Binary masks are stored as 0/255, multi-class masks as class indices 0..3.
    """
    from PIL import Image  # Pillow: loaded only when PNGs are written

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    images, masks, names = generate_dataset(kind, n, size, seed)
    for k, (img, m) in enumerate(zip(images, masks)):
        Image.fromarray(img if img.shape[-1] == 3 else img[..., 0]).save(out / "images" / f"case_{k:03d}.png")
        Image.fromarray(m * 255 if kind == "binary" else m).save(out / "masks" / f"case_{k:03d}.png")
    (out / "classes.txt").write_text("\n".join(names) + "\n")
    return out


def write_box_volumes(
    folder: str | Path,
    n: int = 2,
    shape: tuple[int, int, int] = (10, 40, 36),
    seed: int = 0,
    prefix: str = "case",
) -> Path:
    """``n`` tiny HDF5 volumes in the SSL4MIS layout (``image`` float32 in [0, 1], ``label``
    uint8): two bright boxes, classes 1 and 2, on Gaussian noise — a trivially learnable 3-D
    data set for tests and smoke runs of 3-D training."""
    import h5py  # deferred: only the HDF5 writer needs it

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for k in range(n):
        img = rng.normal(0.2, 0.05, shape).astype(np.float32)
        lab = np.zeros(shape, np.uint8)
        lab[3:7, 10:18, 8:14] = 1
        lab[5:8, 26:31, 22:28] = 2
        img[lab == 1] += 0.5
        img[lab == 2] += 0.3
        with h5py.File(folder / f"{prefix}{k}_frame01.h5", "w") as f:
            f["image"] = np.clip(img, 0, 1)
            f["label"] = lab
    return folder
