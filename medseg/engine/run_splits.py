"""The split a run trained on, kept with the run: ``RUN/splits.json``.

The trainer writes the exact train/val/test ids (and, for one fold of a cross-validation, the
whole fold table) into the run folder (:func:`medseg.data.splits.save_splits`). A later run into
the same folder with the same split settings (``--resume``, ``--overwrite``, or the next folds of
a cross-validation) reuses that file through ``data.split.file`` instead of recomputing the split,
so a change in the data folder or in the code's split rule cannot silently move cases between
training and validation.
"""

from __future__ import annotations

from pathlib import Path

from medseg.config import Config
from medseg.data.splits_io import SPLITS_FILE, read_splits
from medseg.errors import DataError


def saved_split_matches(doc: dict, cfg: Config) -> bool:
    """True when a saved ``splits.json`` was made with ``cfg``'s split settings (folds and seed)."""
    split = cfg.data.split
    return doc.get("folds") == split.folds and doc.get("seed") == split.seed


def reuse_saved_split(cfg: Config, log=print) -> Config:
    """``cfg`` with ``data.split.file`` pointing at ``OUTPUT/splits.json`` when that file exists and
    matches the split settings (else ``cfg`` unchanged; an explicit ``data.split.file`` wins)."""
    path = Path(cfg.output_dir) / SPLITS_FILE
    if cfg.data.split.file is not None or not path.is_file():
        return cfg
    try:
        doc = read_splits(path)
    except DataError as e:
        log(f"not reusing the saved split: {e}")
        return cfg
    if not saved_split_matches(doc, cfg):
        log(f"{path}: made with other split settings (folds, seed); the split is computed anew")
        return cfg
    log(f"reusing the split saved in {path}")
    split = cfg.data.split.model_copy(update={"file": path})
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"split": split})})
