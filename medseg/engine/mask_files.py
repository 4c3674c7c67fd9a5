"""Writing predictions to disk, atomically: masks (PNG, NIfTI, ``.npy``) and PNG images,
under file names made safe from case ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from medseg.atomic import atomic_write
from medseg.data import save_nifti_like


def safe_name(case_id: str) -> str:
    """``case_id`` with every character outside ``[A-Za-z0-9-_.]`` replaced by ``_``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in case_id)


def save_png(path: Path, array: np.ndarray) -> None:
    """Write an image array as PNG, atomically."""
    image = Image.fromarray(array)
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def save_npy(path: Path, array: np.ndarray) -> None:
    """Write an array as ``.npy``, atomically."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.save would append .npy to a path
            np.save(fh, array)

    atomic_write(path, write)


def write_mask(labels: np.ndarray, case: dict, out_dir: Path, *, binary: bool) -> Path:
    """Write one case's predicted labels into ``out_dir``; returns the file written.

    2-D: PNG, binary masks as 0/255, multi-class ones as class indices. Volumes: NIfTI with
    the input's geometry, or ``.npy`` when the input had none.
    """
    name = safe_name(case["id"])
    if labels.ndim == 3:
        if case.get("geometry") is not None:
            path = out_dir / f"{name}.nii.gz"
            save_nifti_like(labels.astype(np.uint8), case["geometry"], path)
        else:
            path = out_dir / f"{name}.npy"
            save_npy(path, labels.astype(np.uint8))
        return path
    path = out_dir / f"{name}.png"
    save_png(path, (labels * 255 if binary else labels).astype(np.uint8))
    return path
