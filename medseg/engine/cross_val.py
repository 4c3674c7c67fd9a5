"""K-fold cross-validation of one configuration: ``medseg train --fold k|all``.

Layout of a cross-validation run ``RUN`` (``output_dir``)::

    RUN/splits.json               the fold table (made once, reused by every fold and rerun)
    RUN/fold_k/                   an ordinary training run of fold k (checkpoints, log, its splits.json)
    RUN/fold_k/oof/               its out-of-fold predictions of the fold's validation cases:
        labels/CASE.npz           predicted labels and the reference (``labels``, ``reference``)
        probabilities/CASE.npz    probabilities (:mod:`medseg.engine.probabilities`)
        per_case.json, summary.*  the evaluation report of those cases
    RUN/postprocessing.json       decided on the OOF predictions of all folds (``--fold all``);
                                  a single fold decides on its own cases: RUN/fold_k/postprocessing.json
    RUN/cv/                       the cross-validation report (:mod:`medseg.engine.cv_report`)

Every non-test case is validated by exactly one fold, so the pooled OOF report scores each
case once, with a model that never trained on it (Isensee et al., nnU-Net, Nature Methods 2021).
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from medseg.atomic import atomic_write_bytes
from medseg.config import Config
from medseg.data import build_data
from medseg.data.build import build_store
from medseg.data.folds import store_strata
from medseg.data.splits import split_ids
from medseg.data.splits_io import SPLITS_FILE, read_splits, write_splits
from medseg.engine.cv_report import cv_report
from medseg.engine.evaluator import _np, score_case
from medseg.engine.mask_files import unique_names
from medseg.engine.predict import open_checkpoint
from medseg.engine.probabilities import class_channels, save_probabilities
from medseg.engine.progress import console, make_progress
from medseg.engine.run_splits import saved_split_matches
from medseg.engine.trainer import train
from medseg.errors import DataError, MedsegError
from medseg.metrics import report as rep
from medseg.postprocess import PLAN_FILE, PostprocessPlan, decide_postprocessing

DEFAULT_FOLDS = 5  # nnU-Net's five-fold cross-validation
OOF_DIR = "oof"
Log = Callable[[str], object]


def with_folds(cfg: Config) -> Config:
    """``cfg`` with ``data.split.folds`` set (5 when the config has none)."""
    if cfg.data.split.folds is not None:
        return cfg
    split = cfg.data.split.model_copy(update={"folds": DEFAULT_FOLDS})
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"split": split})})


def prepare_splits(cfg: Config, run: Path, overwrite: bool, log: Log) -> Path:
    """``RUN/splits.json`` holding the fold table: reused when it matches the split settings,
    else made (seeded, group-aware, stratified; or from the data's ``splits_final.json``)."""
    path = run / SPLITS_FILE
    if path.is_file():
        doc = read_splits(path)
        if saved_split_matches(doc, cfg) and doc["cross_validation"]:
            log(f"reusing the fold table saved in {path}")
            return path
        if not overwrite:
            raise MedsegError(
                f"{path}: made with other split settings (folds, seed); pass --overwrite to replace"
            )
    store, fmt, _ = build_store(cfg.data)
    root = None if cfg.data.root is None or fmt == "synthetic" else Path(cfg.data.root).expanduser()
    root = root if root is not None and root.is_dir() else None
    ids = [r.id for r in store.records]
    first = cfg.data.model_copy(update={"split": cfg.data.split.model_copy(update={"fold": 0})})
    plan = split_ids(ids, root, first, strata=lambda: store_strata(store)).plan
    assert plan is not None
    run.mkdir(parents=True, exist_ok=True)
    write_splits(
        path,
        {"train": list(plan.pool), "val": [], "test": list(plan.test)},
        source=plan.source,
        seed=cfg.data.split.seed,
        folds=plan.k,
        stratified=plan.stratified,
        cross_validation=plan.to_nnunet(),
    )
    log(
        f"{plan.k} folds of {len(plan.pool)} cases ({', '.join(str(len(f)) for f in plan.folds)}), "
        f"{len(plan.test)} test cases kept out; saved to {path}"
    )
    return path


def fold_config(cfg: Config, run: Path, fold: int, splits: Path) -> Config:
    """The configuration of fold ``fold``: its own run folder, the saved fold table."""
    split = cfg.data.split.model_copy(update={"fold": fold, "file": splits})
    data = cfg.data.model_copy(update={"split": split})
    return cfg.model_copy(update={"data": data, "output_dir": run / f"fold_{fold}"})


def save_npz(path: Path, **arrays: np.ndarray) -> Path:
    """A compressed npz written atomically (a crash leaves no half-written file)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
    return atomic_write_bytes(path, buffer.getvalue())


def predict_oof(
    checkpoint: str | Path, out: Path, *, allow_empty: bool = False, what: str = "out-of-fold"
) -> list[dict]:
    """Predict the validation cases of the checkpoint's fold; save labels (with the reference)
    and probabilities per case, and the evaluation report; returns its records. ``out`` is
    emptied first, so no case of an earlier split lingers in it. No validation cases: an error,
    or with ``allow_empty`` no records. ``what`` names the cases in the progress bar and the
    report ("out-of-fold" in a cross-validation, "validation" after a plain run)."""
    shutil.rmtree(out, ignore_errors=True)
    loaded = open_checkpoint(checkpoint)
    cfg, task = loaded.cfg, loaded.task
    cases = build_data(cfg.data.model_copy(update={"cache": False}), cfg.augment, seed=cfg.train.seed).val
    if len(cases) == 0:
        if allow_empty:
            return []
        raise DataError(f"{checkpoint}: its fold has no validation cases")
    names = unique_names(cases.ids)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    (out / "probabilities").mkdir(exist_ok=True)
    records: list[dict] = []
    with make_progress() as progress:
        bar = progress.add_task(f"{what} predictions", total=len(cases))
        for i in range(len(cases)):
            case = cases[i]
            labels, proba = loaded.predict(case)
            reference = _np(case["mask"])
            assert reference is not None
            save_npz(
                out / "labels" / f"{names[i]}.npz",
                labels=labels,
                reference=reference,
                case_id=np.asarray(case["id"]),
                num_classes=np.asarray(task.num_classes),
            )
            p = class_channels(proba.numpy(), task.mode == "binary", channel_axis=0 if proba.ndim == 3 else 1)
            save_probabilities(
                out / "probabilities" / f"{names[i]}.npz", p, case_id=case["id"], channels=task.class_names
            )
            records.extend(score_case(labels, case, task, cfg))
            progress.advance(bar)
    meta = {
        "checkpoint": str(checkpoint),
        "split": f"{what} (the fold's validation cases)",
        "empty_policy": cfg.eval.empty,
        "hd_combine": cfg.eval.hd_combine,
        "postprocessing": "none",
    }
    rep.write_report(records, out, list(task.class_names), meta=meta)
    return records


def load_oof_pairs(folds: list[Path]) -> tuple[list[tuple[np.ndarray, np.ndarray]], int]:
    """(prediction, reference) label maps of every OOF case of the folds, and the class count."""
    pairs, k = [], 2
    for d in folds:
        files = sorted((d / OOF_DIR / "labels").glob("*.npz"))
        if not files:
            raise DataError(f"{d / OOF_DIR / 'labels'}: no out-of-fold predictions")
        for f in files:
            with np.load(f, allow_pickle=False) as z:
                pairs.append((z["labels"], z["reference"]))
                k = max(k, int(z["num_classes"]))
    return pairs, k


def decide_run_postprocessing(
    folds: list[Path], out_file: Path, log: Log, what: str = "out-of-fold"
) -> PostprocessPlan:
    """Decide the post-processing on the OOF predictions of ``folds`` (nnU-Net's rule,
    :func:`medseg.postprocess.decide_postprocessing`) and save it to ``out_file``; ``what``
    names those cases in the log."""
    pairs, k = load_oof_pairs(folds)
    plan = decide_postprocessing(pairs, k)
    plan.save(out_file)
    for rec in plan.decision:
        log(
            f"  {rec['step']}{rec['classes']}{'' if rec['min_size'] is None else ' >= ' + str(rec['min_size'])}: "
            f"mean Dice {rec['mean_before']:.4f} -> {rec['mean_after']:.4f} ({'kept' if rec['kept'] else 'rejected'})"
        )
    log(f"post-processing decided on {len(pairs)} {what} cases: {plan.describe()}; saved to {out_file}")
    return plan


def train_fold(
    cfg: Config, run: Path, fold: int, splits: Path, *, resume: bool, overwrite: bool, log: Log
) -> dict:
    """Train fold ``fold`` into ``RUN/fold_k`` and predict its out-of-fold cases."""
    cfg_k = fold_config(cfg, run, fold, splits)
    log(
        f"[bold]fold {fold}[/] of folds 0..{(cfg.data.split.folds or DEFAULT_FOLDS) - 1} -> {cfg_k.output_dir}"
    )
    result = train(cfg_k, resume=resume, overwrite=overwrite)
    if result["rank"] != 0:
        return result
    records = predict_oof(result["checkpoint"], Path(cfg_k.output_dir) / OOF_DIR)
    summary = rep.summarize(records)
    log(f"fold {fold}: out-of-fold mean Dice {summary['macro']['dice']:.4f} on {summary['n_cases']} cases")
    return {**result, "fold": fold, "oof_summary": summary}


def run_cross_validation(
    cfg: Config,
    fold: int | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    log: Log | None = None,
) -> dict[str, Any]:
    """Train fold ``fold`` (None: every fold, one after the other), keep the OOF predictions,
    decide the post-processing on them and, after all folds, write the cross-validation report."""
    log = log or console.print
    cfg = with_folds(cfg)
    k, run = int(cfg.data.split.folds or DEFAULT_FOLDS), Path(cfg.output_dir)
    if fold is not None and not 0 <= fold < k:
        raise MedsegError(
            f"--fold {fold}: the cross-validation has folds 0..{k - 1} (data.split.folds = {k})"
        )
    splits = prepare_splits(cfg, run, overwrite, log)
    todo = list(range(k)) if fold is None else [fold]
    results = [train_fold(cfg, run, f, splits, resume=resume, overwrite=overwrite, log=log) for f in todo]
    if results and results[0]["rank"] != 0:
        return {"rank": results[0]["rank"], "folds": results}
    out: dict[str, Any] = {"rank": 0, "out_dir": str(run), "folds": results}
    if fold is None:
        every = [run / f"fold_{f}" for f in range(k)]
        out["postprocessing"] = decide_run_postprocessing(every, run / PLAN_FILE, log)
        out["report"] = cv_report(run)
    else:
        fold_dir = run / f"fold_{fold}"
        out["postprocessing"] = decide_run_postprocessing([fold_dir], fold_dir / PLAN_FILE, log)
    return out


def decide_on_validation(
    checkpoint: str | Path, run: str | Path, log: Log | None = None
) -> PostprocessPlan | None:
    """After a plain (not cross-validated) run: predict its validation cases with ``checkpoint``
    into ``RUN/oof`` and decide the post-processing on them (``RUN/postprocessing.json``, which
    ``predict`` and ``evaluate`` then apply); None when the run has no validation cases."""
    log = log or console.print
    run = Path(run)
    if not predict_oof(checkpoint, run / OOF_DIR, allow_empty=True, what="validation"):
        log("post-processing: not decided (the run has no validation cases)")
        return None
    return decide_run_postprocessing([run], run / PLAN_FILE, log, what="validation")
