"""``medseg ensemble``: the mean of several models' class probabilities, then the argmax.

nnU-Net ensembles the softmax outputs of its five cross-validation folds, and of different
configurations, by averaging them voxel by voxel (Isensee et al., Nature Methods 2021, "Ensembling
and selection"). Each member predicts every case in the case's own grid with its own
preprocessing (:func:`medseg.engine.predict.predict_case`), so members trained at different sizes
or normalisations can be averaged. A sigmoid member's map ``p`` counts as ``[1 - p, p]``.

Members: checkpoints, run folders (``RUN/checkpoints/best.safetensors``, else ``last``), or a run
of cross-validation folds (``RUN/fold_0/``, ``RUN/fold_1/``, ...: every fold). Already-written
probability folders (:mod:`medseg.engine.probabilities`) are ensembled without any model by
:func:`ensemble_probability_folders`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medseg.data import open_cases
from medseg.engine.mask_files import save_npy, save_png, unique_names, write_mask
from medseg.engine.predict import LoadedCheckpoint, open_checkpoint
from medseg.engine.predictor import check_output_folder, predicted_channels, write_name_map
from medseg.engine.probabilities import Probabilities, load_probabilities, save_probabilities
from medseg.engine.progress import make_progress
from medseg.errors import MedsegError

_FOLD = re.compile(r"fold_(\d+)")


def member_checkpoints(source: str | Path) -> list[Path]:
    """The checkpoints a source stands for: itself, a run's best (else last) checkpoint, or one
    per ``fold_k/`` run inside it (in fold order)."""
    source = Path(source)
    if source.is_file():
        return [source]
    if source.is_dir():
        folds = [d for d in source.iterdir() if d.is_dir() and _FOLD.fullmatch(d.name)]
        if folds:
            folds.sort(key=lambda d: int(_FOLD.fullmatch(d.name).group(1)))  # type: ignore[union-attr]
            return [c for d in folds for c in member_checkpoints(d)]
        for name in ("best.safetensors", "last.safetensors"):
            if (source / "checkpoints" / name).is_file():
                return [source / "checkpoints" / name]
    raise MedsegError(
        f"{source}: not a checkpoint, a run folder (checkpoints/best.safetensors) or a run of fold_k/ folders"
    )


def case_probabilities(member: LoadedCheckpoint, case: dict, *, tta: bool | None = None) -> np.ndarray:
    """One member's class probabilities ``[K, *spatial]`` (float32) for ``case`` in its own grid."""
    _, proba = member.predict(case, tta=tta, crf=False)
    return predicted_channels(proba.float().numpy())


def labels_of(probs: np.ndarray) -> np.ndarray:
    """``[K, *spatial]`` class probabilities -> labels by argmax (ties to the lower class, as
    ``p > 0.5`` decides a sigmoid map in :mod:`medseg.engine.predict`)."""
    return np.argmax(probs, axis=0).astype(np.uint8 if probs.shape[0] < 256 else np.int32)


def probability_files(folder: str | Path) -> dict[str, Path]:
    """The ``.npz`` files directly in ``folder``, by file stem (sorted)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MedsegError(f"{folder}: not a folder of probability files")
    return {p.name[: -len(".npz")]: p for p in sorted(folder.glob("*.npz")) if p.is_file()}


def _check_members(members: Sequence[LoadedCheckpoint], paths: Sequence[Path]) -> tuple[str, ...]:
    names = members[0].task.class_names
    for m, p in zip(members[1:], paths[1:]):
        if m.task.class_names != names:
            raise MedsegError(
                f"{p}: predicts classes {list(m.task.class_names)}, {paths[0]} predicts {list(names)}; "
                "only models of the same classes can be ensembled"
            )
    return names


def ensemble_predict(
    sources: Sequence[str | Path],
    inputs: str | Path,
    out_dir: str | Path,
    *,
    device: str = "auto",
    tta: bool | None = None,
    save_probs: bool = False,
    overwrite: bool = False,
) -> dict:
    """Predict every input with every member, average the probabilities, write the labels to
    ``out_dir/masks`` (as ``medseg predict`` does) and, with ``save_probs``, the mean
    probabilities to ``out_dir/probabilities``."""
    paths = [c for s in sources for c in member_checkpoints(s)]
    members = [open_checkpoint(p, device=device) for p in paths]
    names = _check_members(members, paths)
    streams = [
        open_cases(
            Path(inputs),
            cfg=m.cfg.data.model_copy(update={"cache": False, "validate_on_load": False}),
            masks=False,
        )
        for m in members
    ]
    if len(streams[0]) == 0:
        raise MedsegError(f"{inputs}: no images found")
    out = Path(out_dir)
    check_output_folder(Path(inputs), out, overwrite=overwrite)
    files = unique_names(streams[0].ids)
    mask_dir, prob_dir = out / "masks", out / "probabilities"
    mask_dir.mkdir(parents=True, exist_ok=True)
    with make_progress() as progress:
        bar = progress.add_task(f"ensembling {len(members)} models", total=len(streams[0]))
        for i in range(len(streams[0])):
            cases = [s[i] for s in streams]
            probs = np.mean([case_probabilities(m, c, tta=tta) for m, c in zip(members, cases)], axis=0)
            labels = labels_of(probs)
            write_mask(labels, cases[0], mask_dir, binary=len(names) == 2, name=files[i])
            if save_probs:
                save_probabilities(
                    prob_dir / f"{files[i]}.npz", probs, case_id=cases[0]["id"], channels=names
                )
            progress.advance(bar)
    name_map = write_name_map(out, streams[0].ids, files)
    return {
        "count": len(streams[0]),
        "members": [str(p) for p in paths],
        "masks": str(mask_dir),
        "probabilities": str(prob_dir) if save_probs else None,
        "names": str(name_map) if name_map else None,
    }


def ensemble_probability_folders(folders: Sequence[str | Path], out_dir: str | Path) -> dict:
    """Average the probability files of ``folders`` case by case (matched by file name) and write
    the mean (``out_dir/probabilities``) and its labels (``out_dir/masks``: PNG for 2-D, with
    0/255 for two classes; ``.npy`` for volumes, which carry no geometry here)."""
    if len(folders) < 1:
        raise MedsegError("--from-probabilities needs at least one folder")
    listed = [probability_files(f) for f in folders]
    for f, files in zip(folders, listed):
        if not files:
            raise MedsegError(f"{f}: no probability files (.npz)")
        missing = sorted(set(listed[0]) ^ set(files))
        if missing:
            raise MedsegError(f"{f}: the folders hold different cases (e.g. {missing[0]})")
    out = Path(out_dir)
    mask_dir, prob_dir = out / "masks", out / "probabilities"
    mask_dir.mkdir(parents=True, exist_ok=True)
    for stem in listed[0]:
        parts = [load_probabilities(files[stem]) for files in listed]
        _check_parts(parts, [files[stem] for files in listed])
        mean = np.mean([p.probabilities for p in parts], axis=0)
        labels = labels_of(mean)
        save_probabilities(
            prob_dir / f"{stem}.npz", mean, case_id=parts[0].case_id, channels=parts[0].channels
        )
        if labels.ndim == 2:
            save_png(mask_dir / f"{stem}.png", labels * 255 if mean.shape[0] == 2 else labels)
        else:
            save_npy(mask_dir / f"{stem}.npy", labels)
    return {"count": len(listed[0]), "masks": str(mask_dir), "probabilities": str(prob_dir)}


def _check_parts(parts: list[Probabilities], paths: list[Path]) -> None:
    first = parts[0]
    if first.kind != "classes":
        raise MedsegError(f"{paths[0]}: region probabilities (kind {first.kind}) have no argmax labels")
    for p, path in zip(parts[1:], paths[1:]):
        if (
            p.channels != first.channels
            or p.probabilities.shape != first.probabilities.shape
            or p.kind != first.kind
        ):
            raise MedsegError(
                f"{path}: classes {list(p.channels)} / shape {p.probabilities.shape} differ from {paths[0]} "
                f"({list(first.channels)} / {first.probabilities.shape})"
            )
