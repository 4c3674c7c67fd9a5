"""Evaluation on a split or a folder: the prediction path -> metrics -> report and overlays."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.atomic import atomic_write_text
from medseg.config import Config
from medseg.data import build_data, open_cases
from medseg.engine.mask_files import safe_name, save_png
from medseg.engine.overlays import case_overlay
from medseg.engine.predict import open_checkpoint, predict_case
from medseg.engine.progress import console, make_progress
from medseg.engine.run_postprocess import load_run_plan
from medseg.engine.task import IGNORE_INDEX, Task
from medseg.errors import MedsegError
from medseg.metrics import evaluate_case, evaluate_regions
from medseg.metrics import report as rep
from medseg.postprocess import PostprocessPlan


def _np(t: Any) -> np.ndarray | None:
    if t is None:
        return None
    return t.numpy() if torch.is_tensor(t) else np.asarray(t)


def score_case(labels: np.ndarray, case: dict, task: Task, cfg: Config) -> list[dict]:
    """Every metric of one predicted case against its mask, as report records."""
    target = _np(case.get("mask"))
    if target is None:
        raise MedsegError(f"{case.get('source', case['id'])}: no mask to evaluate against")
    if task.regions:  # region-based task: metrics per region (label in region), not per class
        per_region = evaluate_regions(
            labels,
            target,
            task.regions,
            case.get("spacing"),
            roi=_np(case.get("roi")),
            ignore_index=IGNORE_INDEX,
            empty=cfg.eval.empty,
            hd_combine=cfg.eval.hd_combine,
            surface=cfg.eval.surface,
            nsd_tolerance=cfg.eval.nsd_tolerance,
        )
        return rep.case_records(case["id"], per_region, list(task.report_names))
    per_class = evaluate_case(
        labels,
        target,
        task.num_classes,
        spacing=case.get("spacing"),
        include_background=False,
        roi=_np(case.get("roi")),
        empty=cfg.eval.empty,
        hd_combine=cfg.eval.hd_combine,
        surface=cfg.eval.surface,
        nsd_tolerance=cfg.eval.nsd_tolerance,
    )
    return rep.case_records(case["id"], per_class, list(task.class_names))


def keep_worst(kept: dict[str, np.ndarray], records: list[dict], count: int) -> dict[str, np.ndarray]:
    """The rendered overlays of the ``count`` worst cases so far (by Dice): memory stays
    bounded by ``count``, not by the number of cases."""
    worst = {w["case"] for w in rep.worst_cases(records, metric="dice", k=count)}
    return {k: v for k, v in kept.items() if k in worst}


def write_overlays(records: list[dict], kept: dict[str, np.ndarray], out_dir: Path, count: int) -> Path:
    """Overlay PNGs (rendered by :func:`case_overlay`) of the ``count`` worst cases by Dice,
    named ``RANK_CASE.png``."""
    overlay_dir = out_dir / "overlays"
    overlay_dir.mkdir(exist_ok=True)
    worst = [w["case"] for w in rep.worst_cases(records, metric="dice", k=count)]
    for rank, case_id in enumerate(worst):
        if case_id in kept:
            save_png(overlay_dir / f"{rank:02d}_{safe_name(case_id)}.png", kept[case_id])
    return overlay_dir


def evaluate_cases(
    model: torch.nn.Module,
    cases,
    task: Task,
    cfg: Config,
    *,
    out_dir: str | Path | None,
    device: torch.device | str = "cpu",
    tta: bool | None = None,
    crf: bool | None = None,
    description: str = "evaluating",
    postprocess: PostprocessPlan | None = None,
) -> dict:
    """Run inference on every case, compute all metrics, write the report to ``out_dir``.
    ``postprocess``: a plan applied to each predicted label map before it is scored."""
    device = torch.device(device)
    model.eval()
    records: list[dict] = []
    kept: dict[str, np.ndarray] = {}  # rendered overlays of the worst cases so far
    out_dir = Path(out_dir) if out_dir is not None else None
    with make_progress() as progress:
        bar = progress.add_task(description, total=len(cases))
        for i in range(len(cases)):
            case = cases[i]
            labels, _ = predict_case(model, case, cfg, device, tta=tta, crf=crf)
            if postprocess is not None:
                labels = postprocess.apply(labels)
            records.extend(score_case(labels, case, task, cfg))
            if out_dir is not None and cfg.eval.overlays:
                kept[case["id"]] = case_overlay(case, labels, _np(case.get("mask")))
                kept = keep_worst(kept, records, cfg.eval.overlays)
            progress.advance(bar)
    result: dict[str, Any] = {"records": records, "summary": rep.summarize(records)}
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        meta = {
            "empty_policy": cfg.eval.empty,
            "hd_combine": cfg.eval.hd_combine,
            "nsd_tolerance": cfg.eval.nsd_tolerance,
            "postprocessing": postprocess.describe() if postprocess is not None else "none",
            "tta": cfg.eval.tta if tta is None else tta,
            "crf": cfg.eval.crf if crf is None else crf,
            "window": cfg.eval.window,
            "model": cfg.model.name,
            "cases": len(cases),
        }
        paths = rep.write_report(records, out_dir, list(task.report_names), meta=meta)
        overlay_dir = write_overlays(records, kept, out_dir, cfg.eval.overlays)
        result["paths"] = {k: str(v) for k, v in paths.items()} | {"overlays": str(overlay_dir)}
    return result


def _cases_to_evaluate(cfg: Config, data_root: str | Path | None, split: str) -> tuple[Any, str]:
    """The cases (and their label) of ``split`` of the run's data, or of the folder ``data_root``;
    decoded when scored, not cached (memory constant in the number of cases; every file is
    still checked once before scoring when ``data.validate_on_load``)."""
    streamed = cfg.data.model_copy(update={"cache": False})
    if data_root is not None:
        return open_cases(Path(data_root), cfg=streamed, masks=True), Path(data_root).name
    data = build_data(streamed, cfg.augment, seed=cfg.train.seed)
    if split not in ("val", "test"):
        raise MedsegError(f"split must be 'val' or 'test', got {split!r}")
    cases = getattr(data, split)
    if len(cases) == 0:
        raise MedsegError(f"{cfg.data.root}: the {split} split is empty; pass --data FOLDER or --split val")
    return cases, split


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    overrides: list[str] | tuple[str, ...] = (),
    data_root: str | Path | None = None,
    split: str = "test",
    out_dir: str | Path | None = None,
    device: str = "auto",
    tta: bool | None = None,
    crf: bool | None = None,
    postprocess: bool = True,
) -> dict:
    """Evaluate a checkpoint on a split of its training data, or on another folder. With
    ``postprocess`` (default) the run's ``postprocessing.json`` is applied when it has one
    (:mod:`medseg.engine.run_postprocess`); the report records what was applied."""
    loaded = open_checkpoint(checkpoint, overrides=overrides, device=device)
    plan, line = load_run_plan(checkpoint, postprocess, log=console.print)
    cfg = loaded.cfg
    cases, label = _cases_to_evaluate(cfg, data_root, split)
    out = Path(out_dir) if out_dir is not None else Path(checkpoint).parent.parent / "eval" / label
    result = evaluate_cases(
        loaded.model,
        cases,
        loaded.task,
        cfg,
        out_dir=out,
        device=loaded.device,
        tta=tta,
        crf=crf,
        description=f"evaluating {label}",
        postprocess=plan,
    )
    result["out_dir"] = str(out)
    run = {
        "checkpoint": str(checkpoint),
        "split": label,
        "tta": cfg.eval.tta if tta is None else tta,
        "crf": cfg.eval.crf if crf is None else crf,
        "postprocessing": line,
    }
    result["postprocessing"] = line
    atomic_write_text(out / "run.json", json.dumps(run, indent=2))
    return result
