"""``medseg predict``: masks at the original size for new images or volumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from medseg.atomic import atomic_write_text
from medseg.data import open_cases
from medseg.engine.mask_files import save_png, unique_names, write_mask
from medseg.engine.overlays import case_overlay
from medseg.engine.predict import LoadedCheckpoint, open_checkpoint
from medseg.engine.probabilities import class_channels
from medseg.engine.probabilities import save_probabilities as write_probabilities
from medseg.engine.progress import console, make_progress
from medseg.engine.run_postprocess import load_run_plan
from medseg.errors import MedsegError


def _check_channels(case: dict, in_channels: int) -> None:
    c = case["image"].shape[-3]
    if c != in_channels:
        raise MedsegError(
            f"{case.get('source', case['id'])}: image has {c} channels, "
            f"the model was trained on {in_channels}"
        )


def predicted_channels(proba: np.ndarray) -> np.ndarray:
    """A prediction's probabilities (``[K, H, W]``, or ``[D, K, H, W]`` for a volume) as class
    channels first; a sigmoid map (K = 1) becomes ``[1 - p, p]``."""
    axis = 1 if proba.ndim == 4 else 0
    return class_channels(proba, proba.shape[axis] == 1, channel_axis=axis)


def input_tree(inputs: Path) -> Path | None:
    """The tree an input folder belongs to: a data set's root for its ``images`` folder, else the
    folder itself; None for a single input file (only the existing-masks rule applies)."""
    if not inputs.is_dir():
        return None
    folder = inputs.resolve()
    return folder.parent if folder.name == "images" else folder


def check_output_folder(inputs: Path, out: Path, *, overwrite: bool) -> None:
    """Refuse (unless ``overwrite``) to write into the inputs' own tree (a data set's ground-truth
    ``masks/``) or over masks a previous prediction left in ``out/masks``."""
    if overwrite:
        return
    tree, target = input_tree(inputs), out.resolve()
    if tree is not None and (target == tree or tree in target.parents):
        raise MedsegError(
            f"{out}: inside the inputs' own folder {tree}; predictions could overwrite its files "
            "(choose another --out, or pass --overwrite)"
        )
    masks = out / "masks"
    if masks.is_dir() and any(masks.iterdir()):
        raise MedsegError(f"{masks}: already holds masks; choose another --out, or pass --overwrite")


def write_name_map(out: Path, case_ids: list[str], names: list[str]) -> Path | None:
    """``out/names.csv`` (case id -> file stem) when a stem differs from its case id."""
    if all(i == n for i, n in zip(case_ids, names)):
        return None
    rows = ["case_id,file"] + ['"{}","{}"'.format(i.replace('"', '""'), n) for i, n in zip(case_ids, names)]
    return atomic_write_text(out / "names.csv", "\n".join(rows) + "\n")


def _open_inputs(inputs: Path, loaded: LoadedCheckpoint):
    """The inputs as cases, streamed: each is decoded when it is predicted, never cached (memory
    constant in the number of inputs); a bad file is reported when reached, before its mask."""
    streamed = loaded.cfg.data.model_copy(update={"cache": False, "validate_on_load": False})
    cases = open_cases(inputs, cfg=streamed, masks=False)
    if len(cases) == 0:
        raise MedsegError(f"{inputs}: no images found")
    return cases


def _write_probabilities(path: Path, proba: torch.Tensor, case: dict, loaded: LoadedCheckpoint) -> None:
    """One case's class probabilities (:mod:`medseg.engine.probabilities`)."""
    channels = predicted_channels(proba.numpy())
    write_probabilities(path, channels, case_id=case["id"], channels=loaded.task.class_names)


def predict_folder(
    checkpoint: str | Path,
    inputs: str | Path,
    out_dir: str | Path,
    *,
    overrides: list[str] | tuple[str, ...] = (),
    device: str = "auto",
    tta: bool | None = None,
    crf: bool | None = None,
    overlays: bool = True,
    overwrite: bool = False,
    save_probabilities: bool = False,
    postprocess: bool = True,
) -> dict:
    """Predict every image/volume under ``inputs``; write masks (and overlays) to ``out_dir``.

    Binary masks are written as 0/255 PNG, multi-class ones as class-index PNG. A volume is
    predicted in its case layout (RAS, slice axis first, at ``data.target_spacing`` when set) and
    mapped back exactly (inverse resampling, inverse reorientation) to be written in its input's
    format with the input's affine, header and shape (``.npy`` when the input had no geometry;
    a DICOM series as NIfTI, listed in ``notes``). File names are
    the case ids made safe and unique (``names.csv`` maps them back when they differ). Writing
    into the inputs' tree or over existing masks is refused unless ``overwrite``. With
    ``save_probabilities``, each case's class probabilities go to ``out_dir/probabilities/NAME.npz``
    (:mod:`medseg.engine.probabilities`). With ``postprocess`` (default) the run's
    ``postprocessing.json`` is applied when it has one. ``tta`` / ``crf``: None keeps the run's
    ``eval.tta`` / ``eval.crf``.
    """
    loaded = open_checkpoint(checkpoint, overrides=overrides, device=device)
    plan, line = load_run_plan(checkpoint, postprocess, log=console.print)
    cases = _open_inputs(Path(inputs), loaded)
    out = Path(out_dir)
    check_output_folder(Path(inputs), out, overwrite=overwrite)
    names = unique_names(cases.ids)
    mask_dir, overlay_dir = out / "masks", out / "overlays"
    mask_dir.mkdir(parents=True, exist_ok=True)
    if overlays:
        overlay_dir.mkdir(exist_ok=True)
    notes: list[str] = []
    with make_progress() as progress:
        bar = progress.add_task("predicting", total=len(cases))
        for i in range(len(cases)):
            case = cases[i]
            _check_channels(case, loaded.state["in_channels"])
            labels, proba = loaded.predict(case, tta=tta, crf=crf)
            if plan is not None:
                labels = plan.apply(labels)
            write_mask(
                labels, case, mask_dir, binary=loaded.task.mode == "binary", name=names[i], notes=notes
            )
            if save_probabilities:
                _write_probabilities(out / "probabilities" / f"{names[i]}.npz", proba, case, loaded)
            if overlays:
                save_png(overlay_dir / f"{names[i]}.png", case_overlay(case, labels))
            progress.advance(bar)
    name_map = write_name_map(out, cases.ids, names)
    return {
        "count": len(cases),
        "masks": str(mask_dir),
        "overlays": str(overlay_dir) if overlays else None,
        "names": str(name_map) if name_map else None,
        "notes": notes,
        "probabilities": str(out / "probabilities") if save_probabilities else None,
        "postprocessing": line,
    }
