"""Data layer: discovery, splits, label mapping, the case store, datasets, readers, geometry.

Heavy optional readers (nibabel, h5py, tifffile, albumentations, OpenCV) are imported inside
the functions that need them, so ``import medseg.data`` does not load them.
"""

from __future__ import annotations

from medseg.data.build import build_data, build_store, open_cases
from medseg.data.case_store import CaseStore
from medseg.data.config import AugmentConfig, DataConfig, SplitConfig, SyntheticConfig
from medseg.data.datasets import CaseDataset, DataBundle, TrainDataset
from medseg.data.fingerprint import fingerprint, fingerprint_table, save_fingerprint
from medseg.data.nifti import save_nifti_like
from medseg.data.splits import read_split_files, split_ids
from medseg.data.synthetic import generate_dataset, write_synthetic_dataset
from medseg.data.transforms import model_input_size, to_model_space

__all__ = [
    "AugmentConfig",
    "CaseDataset",
    "CaseStore",
    "DataBundle",
    "DataConfig",
    "SplitConfig",
    "SyntheticConfig",
    "TrainDataset",
    "build_data",
    "build_store",
    "fingerprint",
    "fingerprint_table",
    "generate_dataset",
    "model_input_size",
    "open_cases",
    "read_split_files",
    "save_fingerprint",
    "save_nifti_like",
    "split_ids",
    "to_model_space",
    "write_synthetic_dataset",
]
