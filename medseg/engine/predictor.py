"""``medseg predict``: masks at the original size for new images or volumes."""

from __future__ import annotations

from pathlib import Path

from medseg.data import open_cases
from medseg.engine.mask_files import safe_name, save_png, write_mask
from medseg.engine.overlays import case_overlay
from medseg.engine.predict import open_checkpoint
from medseg.engine.progress import make_progress
from medseg.errors import MedsegError


def _check_channels(case: dict, in_channels: int) -> None:
    c = case["image"].shape[-3]
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
    loaded = open_checkpoint(checkpoint, overrides=overrides, device=device)
    cases = open_cases(Path(inputs), cfg=loaded.cfg.data, masks=False)
    if len(cases) == 0:
        raise MedsegError(f"{inputs}: no images found")
    out = Path(out_dir)
    mask_dir = out / "masks"
    mask_dir.mkdir(parents=True, exist_ok=True)
    overlay_dir = out / "overlays"
    if overlays:
        overlay_dir.mkdir(exist_ok=True)
    binary = loaded.task.mode == "binary"
    with make_progress() as progress:
        bar = progress.add_task("predicting", total=len(cases))
        for i in range(len(cases)):
            case = cases[i]
            _check_channels(case, loaded.state["in_channels"])
            labels, _ = loaded.predict(case, tta=tta, crf=crf)
            write_mask(labels, case, mask_dir, binary=binary)
            if overlays:
                save_png(overlay_dir / f"{safe_name(case['id'])}.png", case_overlay(case, labels))
            progress.advance(bar)
    return {"count": len(cases), "masks": str(mask_dir), "overlays": str(overlay_dir) if overlays else None}
