"""``medseg predict``: masks at the original size for new images or volumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.atomic import atomic_write
from medseg.config import load_config
from medseg.engine.evaluator import _overlay_slice, _safe, predict_case, save_png
from medseg.engine.progress import make_progress
from medseg.errors import MedsegError


def _save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.save would append .npy to a path
            np.save(fh, array)

    atomic_write(path, write)


def _check_channels(case: dict, in_channels: int) -> None:
    image = case["image"]
    c = image.shape[-3]
    if c != in_channels:
        raise MedsegError(
            f"{case.get('source', case['id'])}: image has {c} channels, "
            f"the model was trained on {in_channels}"
        )


def predict_folder(
    checkpoint: str | Path,
    inputs: str | Path,
    out_dir: str | Path,
    *,
    overrides: list[str] | tuple[str, ...] = (),
    device: str = "auto",
    tta: bool = False,
    crf: bool = False,
    overlays: bool = True,
) -> dict:
    """Predict every image/volume under ``inputs``; write masks (and overlays) to ``out_dir``.

    Binary masks are written as 0/255 PNG, multi-class ones as class-index PNG; volumes
    as NIfTI with the input's geometry (or ``.npy`` when the input had none).
    """
    from medseg.data import open_cases, save_nifti_like
    from medseg.engine.checkpoint import load_inference_model
    from medseg.engine.trainer import resolve_device

    model, state = load_inference_model(checkpoint)
    cfg = load_config(state["config"], overrides)
    dev = resolve_device(device if device != "auto" else cfg.train.device)
    model.to(dev)
    cases = open_cases(Path(inputs), cfg=cfg.data, masks=False)
    if len(cases) == 0:
        raise MedsegError(f"{inputs}: no images found")
    out = Path(out_dir)
    mask_dir = out / "masks"
    mask_dir.mkdir(parents=True, exist_ok=True)
    overlay_dir = out / "overlays"
    if overlays:
        overlay_dir.mkdir(exist_ok=True)
    binary = state["task_mode"] == "binary"
    with make_progress() as progress:
        bar = progress.add_task("predicting", total=len(cases))
        for i in range(len(cases)):
            case = cases[i]
            _check_channels(case, state["in_channels"])
            labels, _ = predict_case(model, case, cfg, dev, tta=tta, crf=crf)
            name = _safe(case["id"])
            if labels.ndim == 3:
                if case.get("geometry") is not None:
                    save_nifti_like(labels.astype(np.uint8), case["geometry"], mask_dir / f"{name}.nii.gz")
                else:
                    _save_npy(mask_dir / f"{name}.npy", labels.astype(np.uint8))
            else:
                save_png(mask_dir / f"{name}.png", (labels * 255 if binary else labels).astype(np.uint8))
            if overlays:
                save_png(overlay_dir / f"{name}.png", _overlay_slice(case, labels, None))
            progress.advance(bar)
    return {"count": len(cases), "masks": str(mask_dir), "overlays": str(overlay_dir) if overlays else None}
