"""Data layer: datasets, augmentation, demo phantoms and dataset fingerprints.

Heavy modules (albumentations, nibabel, h5py) load only when the functions are used.
"""

from __future__ import annotations

from medseg.data.config import AugmentConfig, DataConfig, SplitConfig, SyntheticConfig
from medseg.data.fingerprint import fingerprint, fingerprint_table, save_fingerprint  # name = module name

__all__ = [
    "AugmentConfig",
    "DataConfig",
    "SplitConfig",
    "SyntheticConfig",
    "build_data",
    "open_cases",
    "write_synthetic_dataset",
    "save_nifti_like",
    "fingerprint",
    "fingerprint_table",
    "save_fingerprint",
    "to_model_space",
    "DataBundle",
]


def __getattr__(name: str):
    import importlib

    where = {
        "build_data": "medseg.data.datasets",
        "open_cases": "medseg.data.datasets",
        "DataBundle": "medseg.data.datasets",
        "CaseDataset": "medseg.data.datasets",
        "TrainDataset": "medseg.data.datasets",
        "write_synthetic_dataset": "medseg.data.synthetic",
        "generate_dataset": "medseg.data.synthetic",
        "save_nifti_like": "medseg.data.readers",
        "to_model_space": "medseg.data.transforms",
        "model_input_size": "medseg.data.transforms",
    }
    if name in where:
        return getattr(importlib.import_module(where[name]), name)
    raise AttributeError(f"module 'medseg.data' has no attribute {name!r}")
