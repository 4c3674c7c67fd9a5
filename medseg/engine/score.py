"""``medseg score PRED GT``: score a folder of existing predictions against reference label maps.

Predictions from any tool (medseg, nnU-Net, MONAI, ...) are paired with references by name
(:mod:`medseg.engine.label_files`), mapped to class indices, optionally post-processed with a
saved :class:`~medseg.postprocess.PostprocessPlan`, and evaluated with the same metrics, report
files, plots and empty-case policies as ``medseg evaluate`` (:func:`medseg.metrics.evaluate_case`,
:func:`medseg.metrics.report.write_report`). The spacing comes from the files (NIfTI header,
HDF5/npz ``spacing``), or from ``spacing`` when the files have none (2D images: pixels).

Region-based tasks (overlapping regions such as BraTS whole tumour / tumour core / enhancing
tumour) are scored per region, ``label in region`` on both sides, as ``medseg evaluate`` scores a
region-based run (:func:`medseg.metrics.evaluate_regions`); the regions come from ``regions`` or
from an nnU-Net ``dataset.json`` beside the references (:mod:`medseg.engine.score_regions`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.constants import IGNORE_INDEX
from medseg.data.labels import auto_mapping, class_names_from_root, map_mask, values_present
from medseg.engine.label_files import LabelFile, check_same_grid, index_folder, pair_names, read_label_file
from medseg.engine.score_regions import RegionSpec, ScoreRegions, resolve_regions
from medseg.errors import DataError
from medseg.metrics import evaluate_case, evaluate_regions
from medseg.metrics import report as rep
from medseg.metrics.empty import resolve_empty
from medseg.metrics.surface import HDCombine
from medseg.postprocess import PostprocessPlan, decide_postprocessing

IGNORE = IGNORE_INDEX


def pair_folders(
    pred_dir: Path, ref_dir: Path, allow_missing: bool = False
) -> tuple[list[tuple[str, Path, Path]], dict]:
    """``[(case, prediction, reference)]`` paired by name, and the unpaired files of each side.

    A reference without a prediction (or the reverse) is an error naming the files unless
    ``allow_missing``; then only the pairs are scored and the rest is reported."""
    preds, refs = index_folder(pred_dir), index_folder(ref_dir)
    pairs = pair_names(preds, refs, pred_dir, ref_dir)
    used_p, used_r = {p for _, p, _ in pairs}, {r for _, _, r in pairs}
    unpaired = {
        "references_without_prediction": [str(r) for r in sorted(set(refs.values()) - used_r)],
        "predictions_without_reference": [str(p) for p in sorted(set(preds.values()) - used_p)],
    }
    if not pairs:
        raise DataError(f"{pred_dir}: no prediction pairs with a reference in {ref_dir} (names differ)")
    for what, files in unpaired.items():
        if files and not allow_missing:
            shown = ", ".join(Path(f).name for f in files[:3]) + (", ..." if len(files) > 3 else "")
            raise DataError(
                f"{pred_dir if what.startswith('ref') else ref_dir}: {len(files)} "
                f"{what.replace('_', ' ')}: {shown} (allow_missing scores the {len(pairs)} pairs)"
            )
    return pairs, unpaired


def _classes(
    raw: np.ndarray, mapping: Mapping[int, int] | None, path: Path, num_classes: int | None
) -> np.ndarray:
    """Raw label values -> class indices (the given mapping, else medseg's default per file)."""
    if mapping is None:
        values = values_present(raw) if raw.dtype != bool else {0, 1}
        mapping = auto_mapping(values, num_classes, str(path))
    limit = num_classes if num_classes is not None else 254
    return map_mask(raw, mapping, None, limit, str(path))


def _check_pair(pred: LabelFile, ref: LabelFile, spacing: Sequence[float] | None) -> tuple[float, ...] | None:
    check_same_grid(pred, ref)
    if spacing is not None:
        return tuple(float(s) for s in spacing)
    if (
        pred.spacing is not None
        and ref.spacing is not None
        and not np.allclose(pred.spacing, ref.spacing, rtol=1e-3)
    ):
        raise DataError(
            f"{pred.path}: spacing {pred.spacing} differs from reference {ref.path.name} {ref.spacing}"
        )
    return ref.spacing if ref.spacing is not None else pred.spacing


def _load_pairs(
    pairs: list[tuple[str, Path, Path]],
    mapping: Mapping[int, int] | None,
    num_classes: int | None,
    spacing,
    ignore_label: int | None = None,
):
    """``(case, prediction classes, reference classes, spacing)`` per pair, read one at a time;
    reference voxels holding ``ignore_label`` (nnU-Net's ignore label) become ``IGNORE``."""
    for case, p, r in pairs:
        pred, ref = read_label_file(p), read_label_file(r)
        sp = _check_pair(pred, ref, spacing)
        ref_values, ignored = ref.values, None
        if ignore_label is not None:
            ignored = ref_values == ignore_label
            ref_values = np.where(ignored, 0, ref_values)
        ref_classes = _classes(ref_values, mapping, r, num_classes)
        if ignored is not None:
            ref_classes[ignored] = IGNORE
        yield case, _classes(pred.values, mapping, p, num_classes), ref_classes, sp


def _class_names(ref_dir: Path, names: Sequence[str] | None, num_classes: int | None) -> list[str] | None:
    if names is not None:
        return list(names)
    for d in (ref_dir, ref_dir.parent):  # dataset.json sits beside labelsTr/ in nnU-Net and MSD
        found = class_names_from_root(d)
        if found is not None and (num_classes is None or len(found) == num_classes):
            return found
    return None


def _label_set(
    pairs: list[tuple[str, Path, Path]],
    ref_dir: Path,
    class_names: Sequence[str] | None,
    num_classes: int | None,
    label_values: Mapping[int, int] | None,
    spacing: Sequence[float] | None,
) -> tuple[int, list[str]]:
    """Number of classes and their names: given, else from dataset.json / classes.txt beside the
    references, else the largest class in the files + 1 (one extra pass over them)."""
    names = _class_names(ref_dir, class_names, num_classes)
    k = num_classes or (len(names) if names else None)
    if k is None:
        top = 0
        for _, p, r, _ in _load_pairs(pairs, label_values, None, spacing):
            top = max(top, int(p.max(initial=0)), int(r[r != IGNORE].max(initial=0)))
        k = max(top + 1, 2)
    if names is None:
        names = (
            ["background", "foreground"] if k == 2 else ["background"] + [f"class{c}" for c in range(1, k)]
        )
    return k, names


def _meta(
    pred_dir: Path,
    ref_dir: Path,
    n: int,
    empty: str,
    hd_combine: str,
    nsd_tolerance: float,
    spacing: Sequence[float] | None,
    plan: PostprocessPlan | None,
    unpaired: Mapping[str, list[str]],
    regions: ScoreRegions | None = None,
) -> dict[str, Any]:
    """What the report records about how it was scored."""
    by_region: dict[str, Any] = {"scored": "per class"}
    if regions is not None:
        by_region = {"scored": "per region (label in region)", "regions": regions.as_dict()}
        by_region["regions_from"] = regions.source
        if regions.ignore_label is not None:
            by_region["ignore_label"] = regions.ignore_label
    return {
        "predictions": str(pred_dir),
        "references": str(ref_dir),
        "cases": n,
        **by_region,
        "empty_policy": resolve_empty(empty).describe(),
        "hd_combine": hd_combine,
        "nsd_tolerance": nsd_tolerance,
        "spacing": f"given: {list(spacing)}"
        if spacing is not None
        else "from the files (pixels when absent)",
        "postprocessing": plan.describe() if plan is not None else "none",
        **{what: len(files) for what, files in unpaired.items()},
    }


def _records(
    loaded, k: int | None, names: list[str], scored: ScoreRegions | None, plan, options: dict[str, Any]
) -> list[dict[str, Any]]:
    """Report records of every loaded pair: per class, or per region when ``scored``."""
    records: list[dict[str, Any]] = []
    for case, pred, ref, sp in loaded:
        if plan is not None:
            pred = plan.apply(pred)
        if scored is None:
            per = evaluate_case(pred, ref, k or 2, spacing=sp, ignore_index=IGNORE, **options)
        else:
            per = evaluate_regions(pred, ref, scored.sets, sp, ignore_index=IGNORE, **options)
        records.extend(rep.case_records(case, per, names))
    return records


def score_folders(
    pred_dir: str | Path,
    ref_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    label_values: Mapping[int, int] | None = None,
    regions: RegionSpec | None = None,
    spacing: Sequence[float] | None = None,
    empty: str = "nan",
    hd_combine: HDCombine = "max",
    nsd_tolerance: float = 2.0,
    surface: bool = True,
    postprocess: PostprocessPlan | str | Path | None = None,
    allow_missing: bool = False,
    plots: bool = True,
) -> dict[str, Any]:
    """Score every prediction in ``pred_dir`` against its reference in ``ref_dir``.

    ``num_classes`` / ``class_names``: the label set (default: the names of a ``dataset.json`` or
    ``classes.txt`` beside the references, else the largest class found + 1). ``label_values``:
    raw value -> class for both folders (default per file: 0/255 -> 0/1, small integers as is).
    ``regions``: score overlapping regions instead of classes (``{name: [labels]}``, a file, a
    run folder or an inline spec, :func:`~medseg.engine.score_regions.resolve_regions`; ``"none"``
    scores per class); without it, a region-based nnU-Net ``dataset.json`` beside the references
    is used unless ``class_names`` is given. ``spacing``: voxel size per array axis, overriding
    the files'. ``empty``, ``hd_combine``, ``nsd_tolerance``, ``surface``: as for ``medseg
    evaluate``. ``postprocess``: a plan (or its JSON file) applied to each prediction first.
    Writes the evaluation report into ``out_dir`` when given. Returns ``{"records", "summary",
    "meta", "paths"}``.
    """
    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    resolve_empty(empty)  # a bad policy fails before any file is read
    if hd_combine not in ("max", "pooled"):
        raise ValueError(f"hd_combine must be 'max' or 'pooled', got {hd_combine!r}")
    plan = PostprocessPlan.load(postprocess) if isinstance(postprocess, str | Path) else postprocess
    scored = resolve_regions(regions, ref_dir, num_classes, auto=class_names is None)
    pairs, unpaired = pair_folders(pred_dir, ref_dir, allow_missing)
    k: int | None
    if scored is None:
        k, names = _label_set(pairs, ref_dir, class_names, num_classes, label_values, spacing)
    else:  # region labels are the files' labels: no class count needed beyond a given one
        k, names = num_classes, ["background", *scored.names]
    options = {"empty": empty, "hd_combine": hd_combine, "nsd_tolerance": nsd_tolerance, "surface": surface}
    loaded = _load_pairs(pairs, label_values, k, spacing, scored.ignore_label if scored else None)
    records = _records(loaded, k, names, scored, plan, options)
    meta = _meta(
        pred_dir, ref_dir, len(pairs), empty, hd_combine, nsd_tolerance, spacing, plan, unpaired, scored
    )
    result: dict[str, Any] = {
        "records": records,
        "summary": rep.summarize(records),
        "meta": meta,
        "unpaired": unpaired,
    }
    if out_dir is not None:
        paths = rep.write_report(records, out_dir, names, meta=meta, plots=plots)
        result["paths"] = {k_: str(v) for k_, v in paths.items()}
    return result


def decide_postprocessing_from_folders(
    pred_dir: str | Path,
    ref_dir: str | Path,
    out_file: str | Path | None = None,
    *,
    num_classes: int | None = None,
    label_values: Mapping[int, int] | None = None,
    connectivity: int | None = None,
    remove_small: bool = True,
) -> PostprocessPlan:
    """Decide post-processing (:func:`medseg.postprocess.decide_postprocessing`) on a folder of
    out-of-fold predictions (every case predicted by the fold that did not train on it) and its
    references; every reference needs a prediction. Saves the plan to ``out_file`` when given."""
    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    pairs, _ = pair_folders(pred_dir, ref_dir, allow_missing=False)
    k, _ = _label_set(pairs, ref_dir, None, num_classes, label_values, None)
    loaded = [(p, r) for _, p, r, _ in _load_pairs(pairs, label_values, k, None)]
    plan = decide_postprocessing(loaded, k, connectivity=connectivity, remove_small=remove_small)
    if out_file is not None:
        plan.save(out_file)
    return plan
