"""The model grid of a case and the exact way back: reorient to RAS, resample, and undo both.

:func:`to_model_grid` takes a stored volume and its (pixdim-corrected) affine to RAS at a target
spacing and returns a :class:`GridRecord`; :func:`restore_prediction` maps a prediction made on
that grid (labels or per-class probabilities) back to the input's own grid: the exact stored
shape, the stored orientation, the stored affine, and the dtype of the input's labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medseg.data.geometry.affine import affine_spacing
from medseg.data.geometry.orientation import Reorientation, from_ras, to_ras
from medseg.data.geometry.resample import resample_image, resample_labels


@dataclass(frozen=True)
class GridRecord:
    """Everything needed to map a model-grid array back to the stored case."""

    reorientation: Reorientation
    ras_shape: tuple[int, ...]  # spatial shape after reorienting, before resampling
    ras_spacing: tuple[float, ...]
    model_spacing: tuple[float, ...]
    model_shape: tuple[int, ...]
    label_dtype: np.dtype

    @property
    def affine(self) -> np.ndarray:
        """The affine given to :func:`to_model_grid` (the pixdim-corrected voxel affine of a NIfTI;
        write files with the source's own ``geometry["affine"]`` and header, see ``save_nifti_like``)."""
        return self.reorientation.stored_affine


def _scaled_affine(affine: np.ndarray, shape: Sequence[int], target: Sequence[int]) -> np.ndarray:
    """Affine of a resampled RAS grid (voxel centres aligned: each axis scaled by n_in / n_out)."""
    scale = np.asarray(shape, float) / np.asarray(target, float)
    step = np.diag(np.append(scale, 1.0))
    step[:3, 3] = 0.5 * (scale - 1.0)  # output voxel o sits at input coordinate (o + 0.5) * scale - 0.5
    return affine @ step


def to_model_grid(
    image: np.ndarray,
    affine: np.ndarray,
    target_spacing: Sequence[float | None] | None = None,
    labels: np.ndarray | None = None,
    *,
    order: int = 3,
    label_mode: str = "linear",
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, GridRecord]:
    """Reorient ``image`` (spatial axes first in the affine's voxel order, channels last) to RAS
    and resample it to ``target_spacing`` (None: keep the spacing).

    Returns the image (float32), the labels on the same grid (or None), the grid's affine and the
    :class:`GridRecord` for :func:`restore_prediction`. The grid's true spacing is
    ``ras_shape * ras_spacing / model_shape``: the target up to the rounding of the shape.
    """
    ras, ras_affine, reo = to_ras(np.asarray(image), affine)
    ras_spacing = affine_spacing(ras_affine)
    spacing = (
        ras_spacing
        if target_spacing is None  # an axis whose target is None keeps its spacing
        else tuple(float(r if v is None else v) for r, v in zip(ras_spacing, target_spacing))
    )
    out = resample_image(ras, ras_spacing, spacing, order=order)
    model_shape = tuple(out.shape[:3])
    lab = None
    if labels is not None:
        lab_ras = to_ras(np.asarray(labels), affine)[0]
        lab = resample_labels(lab_ras, ras_spacing, spacing, mode=label_mode, out_shape=model_shape)
    label_dtype = np.dtype(labels.dtype) if labels is not None else np.dtype(np.uint8)
    rec = GridRecord(reo, tuple(ras.shape[:3]), ras_spacing, spacing, model_shape, label_dtype)
    return out, lab, _scaled_affine(ras_affine, ras.shape[:3], model_shape), rec


def restore_prediction(
    prediction: np.ndarray, record: GridRecord, *, kind: str = "labels", label_mode: str = "nearest"
) -> tuple[np.ndarray, np.ndarray]:
    """Map a model-grid prediction back to the stored case; returns ``(array, stored affine)``.

    ``kind="labels"``: an integer map on the model grid, resampled with ``label_mode`` and cast to
    the input's label dtype. ``kind="probabilities"``: ``[*model_shape, K]`` per-class maps,
    resampled linearly (nearest along a low-resolution axis), float32; take the arg-max after
    restoring for the best labels.
    """
    spatial = tuple(prediction.shape[:3])
    if spatial != record.model_shape:
        raise ValueError(f"prediction grid {spatial} does not match the model grid {record.model_shape}")
    old, new, shape = record.model_spacing, record.ras_spacing, record.ras_shape
    if kind == "labels":
        ras = resample_labels(prediction, old, new, mode=label_mode, out_shape=shape)
        return from_ras(ras, record.reorientation).astype(record.label_dtype), record.affine
    if kind == "probabilities":
        ras = resample_image(prediction, old, new, order=1, out_shape=shape)
        return from_ras(ras, record.reorientation).astype(np.float32), record.affine
    raise ValueError(f"kind must be 'labels' or 'probabilities', got {kind!r}")
