"""Volume geometry: spacing and affine (with the pixdim rule), RAS orientation, slice axis,
resampling to a target spacing and its exact inverse for predictions.

=================  ===========================================================================
``affine``         voxel spacing of an affine; the pixdim-vs-affine rule (ACDC) and its warning
``orientation``    to / from RAS (exact), slice axis by spacing
``resample``       resampled shape, nnU-Net's anisotropy rule, image / label resampling
``grid``           the model grid of a case and :func:`restore_prediction` back to the input
``case``           the case layout (RAS, slice axis first), :class:`Geometry`, and back to the file
=================  ===========================================================================
"""

from __future__ import annotations

from medseg.data.geometry.affine import GeometryWarning, affine_spacing, check_geometry, voxel_affine
from medseg.data.geometry.case import Geometry, canonical_case, restore_labels, restore_probabilities
from medseg.data.geometry.grid import GridRecord, restore_prediction, to_model_grid
from medseg.data.geometry.orientation import Reorientation, case_slice_axis, from_ras, slice_axis, to_ras
from medseg.data.geometry.resample import (
    ANISOTROPY_RATIO,
    lowres_axis,
    resample_image,
    resample_labels,
    resampled_shape,
)

__all__ = [
    "ANISOTROPY_RATIO",
    "Geometry",
    "GeometryWarning",
    "GridRecord",
    "Reorientation",
    "affine_spacing",
    "canonical_case",
    "check_geometry",
    "case_slice_axis",
    "from_ras",
    "lowres_axis",
    "resample_image",
    "resample_labels",
    "resampled_shape",
    "restore_labels",
    "restore_probabilities",
    "restore_prediction",
    "slice_axis",
    "to_model_grid",
    "to_ras",
    "voxel_affine",
]
