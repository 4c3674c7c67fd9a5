"""Evaluation on a split or a folder: inference -> optional CRF -> metrics -> report."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from medseg.atomic import atomic_write, atomic_write_text
from medseg.config import Config, load_config
from medseg.engine.overlays import side_by_side
from medseg.engine.progress import make_progress
from medseg.errors import MedsegError
from medseg.inference import predict_proba


@dataclass(frozen=True)
class Task:
    """What a model predicts: ``binary`` (one sigmoid channel) or ``multiclass`` (softmax)."""

    mode: str
    num_classes: int
    class_names: tuple[str, ...]

    @property
    def out_channels(self) -> int:
        return 1 if self.mode == "binary" else self.num_classes


def make_task(loss_mode: str, num_classes: int, class_names: list[str] | tuple[str, ...]) -> Task:
    mode = loss_mode
    if mode == "auto":
        mode = "binary" if num_classes == 2 else "multiclass"
    if mode == "binary" and num_classes != 2:
        raise MedsegError(f"loss.mode=binary needs a 2-class dataset, this one has {num_classes} classes")
    if mode == "multilabel":
        raise MedsegError("multilabel training is not supported by the trainer yet; use multiclass")
    return Task(mode, num_classes, tuple(class_names))


def labels_from_proba(proba: torch.Tensor) -> torch.Tensor:
    """``[..., K, H, W]`` probabilities -> integer labels ``[..., H, W]``."""
    if proba.shape[-3] == 1:
        return (proba[..., 0, :, :] > 0.5).long()
    return proba.argmax(dim=-3)


def _predict_slices(
    model: torch.nn.Module, x: torch.Tensor, cfg: Config, device: torch.device, tta: bool
) -> torch.Tensor:
    """Probabilities ``[N, K, H, W]`` (on CPU) for images ``[N, C, H, W]`` at native size.

    Images are brought to the scale the model was trained at (``data.resize_policy``),
    predicted whole or by sliding window, and the probabilities mapped back.
    """
    from medseg.data.transforms import to_model_space

    ev = cfg.eval
    # Models trained on native-resolution crops see whole images through a window of the
    # training size (the context they were trained with); others run on the whole image.
    window = ev.window or (tuple(cfg.data.size) if cfg.data.resize_policy == "crop" else None)
    out = []
    for i in range(0, x.shape[0], ev.batch_size):
        chunk, undo = to_model_space(x[i : i + ev.batch_size].to(device), cfg.data)
        proba = predict_proba(
            model,
            chunk,
            window=window,
            overlap=ev.overlap,
            blend=ev.blend,
            batch_size=ev.batch_size,
            tta=tta,
            device=device,
        )
        out.append(undo(proba).float().cpu())
    return torch.cat(out)


def predict_case(
    model: torch.nn.Module,
    case: dict,
    cfg: Config,
    device: torch.device,
    *,
    tta: bool | None = None,
    crf: bool | None = None,
) -> tuple[np.ndarray, torch.Tensor]:
    """Labels (numpy, native size; ``[H, W]`` or ``[D, H, W]``) and probabilities for one case."""
    tta = cfg.eval.tta if tta is None else tta
    crf = cfg.eval.crf if crf is None else crf
    image = case["image"]
    volume = image.ndim == 4
    proba = _predict_slices(model, image if volume else image[None], cfg, device, tta)
    if crf:
        from medseg.inference.crf import dense_crf

        display = np.asarray(case["display"])
        display = display if volume else display[None]
        proba = torch.stack(
            [
                torch.as_tensor(dense_crf(display[i], _two_channel(proba[i]).numpy()))
                for i in range(proba.shape[0])
            ]
        )
    labels = labels_from_proba(proba).numpy().astype(np.uint8 if proba.shape[1] < 256 else np.int32)
    if not volume:
        labels, proba = labels[0], proba[0]
    return labels, proba


def _two_channel(p: torch.Tensor) -> torch.Tensor:
    """CRF needs a distribution over classes: a sigmoid map becomes [1-p, p]."""
    return torch.cat([1 - p, p]) if p.shape[0] == 1 else p


def quick_dice(
    pred: np.ndarray, target: np.ndarray, num_classes: int, roi: np.ndarray | None = None
) -> float:
    """Mean foreground Dice of one case (validation during training)."""
    from medseg.metrics import dice

    if roi is not None:
        pred, target = pred[roi], target[roi]
    return float(np.mean([dice(pred == k, target == k) for k in range(1, num_classes)]))


def _np(t: Any) -> np.ndarray | None:
    if t is None:
        return None
    return t.numpy() if torch.is_tensor(t) else np.asarray(t)


def _overlay_slice(case: dict, labels: np.ndarray, target: np.ndarray | None) -> np.ndarray:
    display = np.asarray(case["display"])
    if labels.ndim == 3:  # a volume: show the slice with the most ground truth (or prediction)
        ref = target if target is not None else labels
        z = int(np.argmax((ref > 0).reshape(ref.shape[0], -1).sum(1)))
        return side_by_side(display[z], labels[z], None if target is None else target[z])
    return side_by_side(display, labels, target)


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
) -> dict:
    """Run inference on every case, compute all metrics, write the report to ``out_dir``."""
    from medseg.metrics import evaluate_case
    from medseg.metrics import report as rep

    device = torch.device(device)
    model.eval()
    records: list[dict] = []
    kept: dict[str, tuple[dict, np.ndarray, np.ndarray | None]] = {}
    out_dir = Path(out_dir) if out_dir is not None else None
    with make_progress() as progress:
        bar = progress.add_task(description, total=len(cases))
        for i in range(len(cases)):
            case = cases[i]
            labels, _ = predict_case(model, case, cfg, device, tta=tta, crf=crf)
            target = _np(case.get("mask"))
            if target is None:
                raise MedsegError(f"{case.get('source', case['id'])}: no mask to evaluate against")
            per_class = evaluate_case(
                labels,
                target,
                task.num_classes,
                spacing=case.get("spacing"),
                include_background=False,
                roi=_np(case.get("roi")),
                empty=cfg.eval.empty,
                surface=cfg.eval.surface,
                nsd_tolerance=cfg.eval.nsd_tolerance,
            )
            records.extend(rep.case_records(case["id"], per_class, list(task.class_names)))
            if out_dir is not None and cfg.eval.overlays:
                kept[case["id"]] = (case, labels, target)
            progress.advance(bar)
    summary = rep.summarize(records)
    result: dict[str, Any] = {"records": records, "summary": summary}
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = rep.write_report(
            records,
            out_dir,
            list(task.class_names),
            meta={
                "empty_policy": cfg.eval.empty,
                "nsd_tolerance": cfg.eval.nsd_tolerance,
                "tta": cfg.eval.tta if tta is None else tta,
                "crf": cfg.eval.crf if crf is None else crf,
                "window": cfg.eval.window,
                "model": cfg.model.name,
                "cases": len(cases),
            },
        )
        overlay_dir = out_dir / "overlays"
        overlay_dir.mkdir(exist_ok=True)
        worst = [w["case"] for w in rep.worst_cases(records, metric="dice", k=cfg.eval.overlays)]
        for rank, case_id in enumerate(worst):
            if case_id in kept:
                case, labels, target = kept[case_id]
                save_png(
                    overlay_dir / f"{rank:02d}_{_safe(case_id)}.png", _overlay_slice(case, labels, target)
                )
        result["paths"] = {k: str(v) for k, v in paths.items()} | {"overlays": str(overlay_dir)}
    return result


def save_png(path: Path, array: np.ndarray) -> None:
    """Write an image array as PNG, atomically."""
    image = Image.fromarray(array)
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


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
) -> dict:
    """Evaluate a checkpoint on a split of its training data, or on another folder."""
    from medseg.data import build_data, open_cases
    from medseg.engine.checkpoint import load_inference_model
    from medseg.engine.trainer import resolve_device

    model, state = load_inference_model(checkpoint)
    cfg = load_config(state["config"], overrides)
    dev = resolve_device(device if device != "auto" else cfg.train.device)
    model.to(dev)
    task = Task(state["task_mode"], state["num_classes"], tuple(state["class_names"]))
    if data_root is not None:
        cases = open_cases(Path(data_root), cfg=cfg.data, masks=True)
        label = Path(data_root).name
    else:
        data = build_data(cfg.data, cfg.augment, seed=cfg.train.seed)
        if split not in ("val", "test"):
            raise MedsegError(f"split must be 'val' or 'test', got {split!r}")
        cases = getattr(data, split)
        if len(cases) == 0:
            raise MedsegError(
                f"{cfg.data.root}: the {split} split is empty; pass --data FOLDER or --split val"
            )
        label = split
    out = Path(out_dir) if out_dir is not None else Path(checkpoint).parent.parent / "eval" / label
    result = evaluate_cases(
        model, cases, task, cfg, out_dir=out, device=dev, tta=tta, crf=crf, description=f"evaluating {label}"
    )
    result["out_dir"] = str(out)
    atomic_write_text(
        out / "run.json",
        json.dumps(
            {
                "checkpoint": str(checkpoint),
                "split": label,
                "tta": cfg.eval.tta if tta is None else tta,
                "crf": cfg.eval.crf if crf is None else crf,
            },
            indent=2,
        ),
    )
    return result
