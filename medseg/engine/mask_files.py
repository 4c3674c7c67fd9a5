"""Writing predictions to disk, atomically: masks (PNG, NIfTI, ``.npy``) and PNG images,
under file names made safe from case ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from medseg.atomic import atomic_write
from medseg.data import save_nifti_like
from medseg.data.geometry import Geometry
from medseg.data.volume_io import write_prediction


def safe_name(case_id: str) -> str:
    """``case_id`` with every character outside ``[A-Za-z0-9-_.]`` replaced by ``_``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in case_id)


def unique_names(case_ids: list[str]) -> list[str]:
    """One output file stem per case id, distinct even where :func:`safe_name` maps several ids
    to one stem or file systems ignore case: the later ones get ``-2``, ``-3``, ..."""
    taken: set[str] = set()
    names = []
    for case_id in case_ids:
        base = name = safe_name(case_id)
        n = 1
        while name.casefold() in taken:
            n += 1
            name = f"{base}-{n}"
        taken.add(name.casefold())
        names.append(name)
    return names


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


def write_mask(
    labels: np.ndarray,
    case: dict,
    out_dir: Path,
    *,
    binary: bool,
    name: str | None = None,
    notes: list[str] | None = None,
) -> Path:
    """Write one case's predicted labels into ``out_dir``; returns the file written.

    2-D: PNG, binary masks as 0/255, multi-class ones as class indices. Volumes with a
    :class:`~medseg.data.geometry.Geometry`: mapped back to the input's own grid and written in
    its format with its affine and header (NIfTI in, NIfTI out; NRRD / MHA / MHD likewise; a
    DICOM series as NIfTI, said in ``notes``); ``.npy`` when the input had no geometry.
    ``name``: the file stem (default: the safe case id).
    """
    name = name or safe_name(case["id"])
    if labels.ndim == 3:
        geometry = case.get("geometry")
        if isinstance(geometry, Geometry):
            path, note = write_prediction(labels.astype(np.uint8), geometry, out_dir, name)
            if note and notes is not None:
                notes.append(note)
        elif geometry is not None:  # a stored-order geometry dict
            path = out_dir / f"{name}.nii.gz"
            save_nifti_like(labels.astype(np.uint8), geometry, path)
        else:
            path = out_dir / f"{name}.npy"
            save_npy(path, labels.astype(np.uint8))
        return path
    path = out_dir / f"{name}.png"
    save_png(path, (labels * 255 if binary else labels).astype(np.uint8))
    return path
