"""Dataset fingerprint (``medseg info DATA``): counts, sizes, channels, intensities, classes, spacing.

In the spirit of the nnU-Net dataset fingerprint (Isensee et al., Nature Methods 2021):
what a user should know about a data set before choosing patch size, normalisation
and loss. Problems with single files are listed rather than raised, so one run
reports all of them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.atomic import atomic_write_text
from medseg.constants import IGNORE_INDEX
from medseg.data.case_store import CaseStore, RawCase
from medseg.data.config import DataConfig
from medseg.data.discovery import Record, discover
from medseg.data.geometry.orientation import TIE_RTOL
from medseg.data.labels import auto_mapping, class_names_from_root, memory_names, resolve_class_names
from medseg.data.splits import read_split_files, split_ids
from medseg.errors import DataError


def _summary(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    a = np.asarray(values, dtype=float)
    return {"min": float(a.min()), "median": float(np.median(a)), "max": float(a.max())}


def _counts(raw: np.ndarray) -> dict[int, int]:
    if raw.dtype == np.uint8:
        hist = np.bincount(raw.ravel(), minlength=256)
        return {int(v): int(hist[v]) for v in np.flatnonzero(hist)}
    vals, cnt = np.unique(
        np.rint(raw).astype(np.int64) if np.issubdtype(raw.dtype, np.floating) else raw, return_counts=True
    )
    return {int(v): int(c) for v, c in zip(vals, cnt)}


def _boundary_counts(raw: np.ndarray) -> dict[int, int]:
    """Per raw mask value, the pixels with an in-plane 4-neighbour of another value (the
    class's 2-D contour; a volume is taken slice by slice along its first axis)."""
    edge = np.zeros(raw.shape, bool)
    for axis in (-1, -2):
        diff = np.diff(raw, axis=axis) != 0
        lo = [slice(None)] * raw.ndim
        hi = [slice(None)] * raw.ndim
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        edge[tuple(lo)] |= diff
        edge[tuple(hi)] |= diff
    return _counts(raw[edge]) if edge.any() else {}


PLANES = {"R": "sagittal", "A": "coronal", "S": "axial"}  # the plane cut by slices along each RAS axis


def slice_axis_entry(case_id: str, raw: RawCase, configured: str = "auto") -> dict[str, Any] | None:
    """How a volume case is sliced for 2D models: the RAS axis, its plane, the RAS spacing it was
    chosen from (mm, before any resampling) and why; None for a 2D case. Volumes without an
    affine (HDF5 / npz) are sliced along their first array axis."""
    if raw.image.ndim != 4:
        return None
    g = raw.geometry
    if g is None:
        spacing = None if raw.spacing is None else [float(v) for v in raw.spacing]
        return {
            "case": case_id,
            "slice_axis": "0",
            "plane": None,
            "spacing": spacing,
            "spacing_axes": "array",
            "chosen_by": "first array axis (no orientation in the file)",
        }
    ras = [float(v) for v in g.grid.ras_spacing]
    if configured != "auto":
        why = f"data.slice_axis={configured}"
    elif sum(v >= max(ras) * (1 - TIE_RTOL) for v in ras) > 1:
        why = "tie in spacing: the first RAS axis"
    else:
        why = "largest spacing"
    return {
        "case": case_id,
        "slice_axis": g.slice_axis,
        "plane": PLANES[g.slice_axis],
        "spacing": ras,
        "spacing_axes": "RAS",
        "chosen_by": why,
    }


@dataclass
class _Scan:
    """What one pass over the cases collects."""

    problems: list[str] = field(default_factory=list)
    heights: list[int] = field(default_factory=list)
    widths: list[int] = field(default_factory=list)
    depths: list[int] = field(default_factory=list)
    spacings: list[tuple[float, ...]] = field(default_factory=list)
    shapes: list[tuple[int, ...]] = field(default_factory=list)
    channels: Counter = field(default_factory=Counter)
    dtypes: Counter = field(default_factory=Counter)
    pooled: list[np.ndarray] = field(default_factory=list)
    chan_means: list[np.ndarray] = field(default_factory=list)
    mask_counts: dict[str, dict[int, int]] = field(default_factory=dict)
    boundary_counts: dict[str, dict[int, int]] = field(default_factory=dict)
    first_seen: dict[int, str] = field(default_factory=dict)
    slice_axes: list[dict[str, Any]] = field(default_factory=list)
    n_slices: int = 0
    plane: str = "auto"  # data.slice_axis

    def add(self, rec: Record, raw: RawCase) -> None:
        img = raw.image
        self.channels[img.shape[-1]] += 1
        self.dtypes[str(img.dtype)] += 1
        if img.ndim == 4:
            self.depths.append(img.shape[0])
            self.n_slices += img.shape[0]
        else:
            self.n_slices += 1
        self.shapes.append(tuple(int(n) for n in img.shape[:-1]))
        self.heights.append(img.shape[-3])
        self.widths.append(img.shape[-2])
        if raw.spacing is not None:
            self.spacings.append(raw.spacing)
        entry = slice_axis_entry(rec.id, raw, self.plane)
        if entry is not None:
            self.slice_axes.append(entry)
        flat = img.reshape(-1, img.shape[-1])
        step = max(1, flat.shape[0] // 20000)
        self.pooled.append(flat[::step].astype(np.float64).ravel())
        self.chan_means.append(flat[::step].astype(np.float64).mean(0))
        if raw.mask is not None:
            self.mask_counts[rec.id] = _counts(raw.mask)
            self.boundary_counts[rec.id] = _boundary_counts(raw.mask)
            for v in self.mask_counts[rec.id]:
                self.first_seen.setdefault(v, str(rec.mask))


def _scan(store: CaseStore, records: list[Record]) -> _Scan:
    scan = _Scan(plane=store.cfg.slice_axis)
    for i, rec in enumerate(records):
        try:
            raw = store.read_raw(i)
        except DataError as e:
            scan.problems.append(str(e))
            continue
        scan.add(rec, raw)
    return scan


def _mapping(cfg: DataConfig, scan: _Scan, values: set[int]) -> dict[int, int] | None:
    if cfg.mask_threshold is not None:
        return None
    try:
        if cfg.mask_values is not None:
            return dict(cfg.mask_values)
        return auto_mapping(values, cfg.num_classes, str(cfg.root), scan.first_seen)
    except DataError as e:
        scan.problems.append(str(e))
        return None


def _class_pixels(
    cfg: DataConfig, scan: _Scan, mapping: dict[int, int] | None, n_classes: int, records: list[Record]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Pixels per class, cases per class, and the ids of cases without foreground."""
    class_pixels = np.zeros(n_classes, np.int64)
    presence = np.zeros(n_classes, np.int64)
    empty: list[str] = []
    mask_path = {r.id: str(r.mask) for r in records}
    for cid, counts in scan.mask_counts.items():
        per = np.zeros(n_classes, np.int64)
        for v, c in counts.items():
            k = _class_of(v, cfg, mapping)
            if k is None:
                if mapping is not None:
                    scan.problems.append(f"{mask_path[cid]}: mask value {v} is not in the class mapping")
                continue
            if 0 <= k < n_classes:
                per[k] += c
        class_pixels += per
        presence += per > 0
        if per[1:].sum() == 0:
            empty.append(cid)
    return class_pixels, presence, empty


def _class_of(value: int, cfg: DataConfig, mapping: dict[int, int] | None) -> int | None:
    """The class of a stored mask value (threshold, else the class mapping); None if unmapped."""
    if cfg.mask_threshold is not None:
        return int(value >= cfg.mask_threshold)
    if mapping is not None and value in mapping:
        return mapping[value]
    return None


def _class_thickness(
    cfg: DataConfig, scan: _Scan, mapping: dict[int, int] | None, n_classes: int, pixels: np.ndarray
) -> list[float | None]:
    """Typical in-plane thickness of each class in pixels: 2 x area / contour length, the width of
    a ribbon (a vessel, a membrane) or the radius of a disc; None for an absent class. The planner
    (medseg.plan) limits downsampling with it, so that thin structures stay several pixels wide."""
    contour = np.zeros(n_classes, np.int64)
    for counts in scan.boundary_counts.values():
        for v, c in counts.items():
            k = _class_of(v, cfg, mapping)
            if k is not None and 0 <= k < n_classes:
                contour[k] += c
    # a class without contour fills whole images: its "thickness" is then capped at 2 x its area
    return [None if pixels[k] == 0 else 2.0 * pixels[k] / max(1, contour[k]) for k in range(n_classes)]


def _intensity(scan: _Scan) -> dict[str, Any] | None:
    if not scan.pooled:
        return None
    allv = np.concatenate(scan.pooled)
    return {
        "min": float(allv.min()),
        "max": float(allv.max()),
        "mean": float(allv.mean()),
        "std": float(allv.std()),
        "p0_5": float(np.percentile(allv, 0.5)),
        "p99_5": float(np.percentile(allv, 99.5)),
        "channel_means": _channel_means(scan.chan_means),
    }


def _channel_means(means: list[np.ndarray]) -> list[float] | dict[str, list[float]]:
    """Mean of each channel; with mixed channel counts (grey and RGB) one list per count."""
    by_count: dict[int, list[np.ndarray]] = {}
    for m in means:
        by_count.setdefault(len(m), []).append(m)
    lists = {str(k): [float(v) for v in np.mean(ms, axis=0)] for k, ms in sorted(by_count.items())}
    return next(iter(lists.values())) if len(lists) == 1 else lists


def _split(cfg: DataConfig, store: CaseStore, fmt: str, scan: _Scan) -> dict[str, Any] | None:
    try:
        root = Path(cfg.root) if cfg.root is not None and Path(cfg.root).is_dir() else None
        sp = split_ids([r.id for r in store.records], root if fmt != "synthetic" else None, cfg)
    except DataError as e:
        scan.problems.append(str(e))
        return None
    split: dict[str, Any] = {k: len(v) for k, v in sp.items()}
    split["source"] = "split files" if read_split_files(root) else f"seeded (seed {cfg.split.seed})"
    return split


def _spacing(scan: _Scan) -> dict[str, list[float]] | None:
    if not scan.spacings:
        return None
    sp = np.asarray(scan.spacings, dtype=float)
    return {"min": sp.min(0).tolist(), "median": np.median(sp, 0).tolist(), "max": sp.max(0).tolist()}


def _classes(cfg: DataConfig, scan: _Scan, fmt: str, records: list[Record]) -> dict[str, Any]:
    """The class part of the fingerprint: values, mapping, names, frequencies, empty masks."""
    values = set().union(*[set(c) for c in scan.mask_counts.values()]) if scan.mask_counts else set()
    mapping = _mapping(cfg, scan, values)
    n_classes = cfg.num_classes or (
        2
        if mapping is None
        else max(2, max([v for v in mapping.values() if v != IGNORE_INDEX], default=1) + 1)
    )
    if fmt == "synthetic":
        found: list[str] | None = memory_names(cfg)
    else:
        found = class_names_from_root(Path(cfg.root) if cfg.root and Path(cfg.root).is_dir() else None)
    names = resolve_class_names(cfg, n_classes, found)
    class_pixels, presence, empty = _class_pixels(cfg, scan, mapping, n_classes, records)
    total = int(class_pixels.sum())
    mapped = bool(scan.mask_counts) and (mapping is not None or cfg.mask_threshold is not None)
    return {
        "mask_values": sorted(values),
        "class_mapping": (None if mapping is None else {str(k): v for k, v in mapping.items()}),
        "mask_threshold": cfg.mask_threshold,
        "num_classes": n_classes,
        "class_names": names,
        "class_frequency": (
            {n: (float(c) / total if total else 0.0) for n, c in zip(names, class_pixels)} if mapped else None
        ),
        "class_presence": {n: int(p) for n, p in zip(names, presence)} if mapped else None,
        "class_thickness": (
            dict(zip(names, _class_thickness(cfg, scan, mapping, n_classes, class_pixels)))
            if mapped
            else None
        ),
        "empty_masks": len(empty) if mapped else None,
        "empty_mask_ids": empty[:20],
    }


def fingerprint(source: DataConfig | str | Path, *, max_cases: int | None = None) -> dict[str, Any]:
    """Describe a dataset. ``source``: a :class:`DataConfig` or a dataset path (format auto-detected).

    Returns a JSON-serialisable dict (see :func:`save_fingerprint`, :func:`fingerprint_table`).
    """
    cfg = source if isinstance(source, DataConfig) else DataConfig(root=Path(source))
    cfg = cfg.model_copy(update={"cache": False})
    recs, memory, fmt = discover(cfg, require_masks=False)
    store = CaseStore(recs, cfg, memory)
    records = store.records[: max_cases or None]
    scan = _scan(store, records)
    classes = _classes(cfg, scan, fmt, records)
    split = _split(cfg, store, fmt, scan)
    return {
        "root": str(cfg.root) if cfg.root is not None else "synthetic",
        "format": fmt,
        "num_cases": len(records),
        "num_labelled": len(scan.mask_counts),
        "num_volumes": len(scan.depths),
        "num_slices": scan.n_slices,
        "has_roi": any(r.roi is not None for r in records),
        "split": split,
        "channels": {str(k): v for k, v in sorted(scan.channels.items())},
        "dtypes": dict(scan.dtypes),
        "size": {
            "height": _summary(scan.heights),
            "width": _summary(scan.widths),
            "depth": _summary(scan.depths),
        },
        "intensity": _intensity(scan),
        **classes,
        "spacing": _spacing(scan),
        # per case, in array-axis order ([D,] H, W): what the planner's median rules need
        "case_shapes": [list(s) for s in scan.shapes],
        "case_spacings": [list(s) for s in scan.spacings] if len(scan.spacings) == len(scan.shapes) else None,
        # per volume case: the axis 2D models slice along, and the spacing it was chosen from
        "slice_axes": scan.slice_axes,
        "problems": scan.problems,
    }


def save_fingerprint(fp: dict[str, Any], path: str | Path) -> Path:
    return atomic_write_text(path, json.dumps(fp, indent=2) + "\n")


def _rng(s: dict | None, fmt: str = "{:g}") -> str:
    if not s:
        return "-"
    if s["min"] == s["max"]:
        return fmt.format(s["min"])
    return f"{fmt.format(s['min'])} .. {fmt.format(s['max'])} (median {fmt.format(s['median'])})"


def slice_axis_text(entry: dict[str, Any]) -> str:
    """One line for a :func:`slice_axis_entry`: ``S (axial), spacing R 1.64 x A 1.64 x S 10 mm: largest spacing``."""
    sp = entry["spacing"]
    if entry["spacing_axes"] == "RAS":
        shown = " x ".join(f"{a} {v:.4g}" for a, v in zip("RAS", sp)) + " mm"
        return f"{entry['slice_axis']} ({entry['plane']}), spacing {shown}: {entry['chosen_by']}"
    shown = "unknown" if sp is None else " x ".join(f"{v:.4g}" for v in sp)
    return f"array axis {entry['slice_axis']}, spacing {shown}: {entry['chosen_by']}"


def fingerprint_table(fp: dict[str, Any]):
    """A two-column :class:`rich.table.Table` of a fingerprint."""
    from rich.table import Table  # rich: loaded only when a table is printed

    t = Table(title=f"Dataset {fp['root']} ({fp['format']})", show_header=True, header_style="bold")
    t.add_column("property")
    t.add_column("value")
    t.add_row("cases", f"{fp['num_cases']} ({fp['num_labelled']} with masks)")
    if fp["num_volumes"]:
        t.add_row("volumes / 2D slices", f"{fp['num_volumes']} / {fp['num_slices']}")
    if fp["split"]:
        sp = fp["split"]
        t.add_row("split", f"train {sp['train']}, val {sp['val']}, test {sp['test']} ({sp['source']})")
    t.add_row("size H x W", f"{_rng(fp['size']['height'])} x {_rng(fp['size']['width'])}")
    if fp["size"]["depth"]:
        t.add_row("depth (slices)", _rng(fp["size"]["depth"]))
    for e in fp.get("slice_axes") or []:
        t.add_row(f"slice axis {e['case']}", slice_axis_text(e))
    t.add_row("channels", ", ".join(f"{k}: {v} cases" for k, v in fp["channels"].items()) or "-")
    t.add_row("dtype", ", ".join(f"{k}: {v}" for k, v in fp["dtypes"].items()) or "-")
    if fp["intensity"]:
        i = fp["intensity"]
        t.add_row(
            "intensity",
            f"mean {i['mean']:.4g}, std {i['std']:.4g}, range {i['min']:.4g} .. {i['max']:.4g}, "
            f"p0.5-p99.5 {i['p0_5']:.4g} .. {i['p99_5']:.4g}",
        )
    if fp["spacing"]:
        s = fp["spacing"]
        t.add_row(
            "spacing",
            f"median {tuple(round(v, 4) for v in s['median'])}, min {tuple(round(v, 4) for v in s['min'])}, "
            f"max {tuple(round(v, 4) for v in s['max'])}",
        )
    vals = fp["mask_values"]
    t.add_row("raw mask values", (", ".join(map(str, vals[:16])) + (" ..." if len(vals) > 16 else "")) or "-")
    if fp["mask_threshold"] is not None:
        t.add_row("class mapping", f"raw >= {fp['mask_threshold']:g} -> 1")
    elif fp["class_mapping"]:
        t.add_row("class mapping", ", ".join(f"{k}->{v}" for k, v in list(fp["class_mapping"].items())[:12]))
    if fp["class_frequency"]:
        t.add_row(
            "class pixel frequency",
            ", ".join(
                f"{n} {100 * f:.2f}% (in {fp['class_presence'][n]} cases)"
                for n, f in fp["class_frequency"].items()
            ),
        )
    if fp["empty_masks"] is not None:
        t.add_row(
            "empty masks",
            str(fp["empty_masks"])
            + (f" ({', '.join(fp['empty_mask_ids'][:5])}...)" if fp["empty_masks"] else ""),
        )
    if fp["has_roi"]:
        t.add_row("region-of-interest masks", "yes")
    for p in fp["problems"][:10]:
        t.add_row("[red]problem[/red]", p)
    if len(fp["problems"]) > 10:
        t.add_row("[red]problem[/red]", f"... and {len(fp['problems']) - 10} more")
    return t
