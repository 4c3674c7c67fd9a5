"""Dataset fingerprint (``medseg info DATA``): counts, sizes, channels, intensities, classes, spacing.

In the spirit of the nnU-Net dataset fingerprint (Isensee et al., Nature Methods 2021):
what a user should know about a data set before choosing patch size, normalisation
and loss. Problems with single files are listed rather than raised, so one run
reports all of them.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.config import DataConfig
from medseg.errors import DataError


def _summary(values: list[float]) -> dict[str, float] | None:
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


def fingerprint(source: DataConfig | str | Path, *, max_cases: int | None = None) -> dict[str, Any]:
    """Describe a dataset. ``source``: a :class:`DataConfig` or a dataset path (format auto-detected).

    Returns a JSON-serialisable dict (see :func:`save_fingerprint`, :func:`fingerprint_table`).
    """
    from medseg.data.datasets import (
        CaseStore,
        _names,
        _records,
        auto_mapping,
        class_names_from_root,
        read_split_files,
        split_ids,
    )

    cfg = source if isinstance(source, DataConfig) else DataConfig(root=Path(source))
    cfg = cfg.model_copy(update={"cache": False})
    recs, memory, fmt = _records(cfg, require_masks=False)
    store = CaseStore(recs, cfg, memory)
    records = store.records[: max_cases or None]
    problems: list[str] = []
    heights, widths, depths, spacings = [], [], [], []
    channels, dtypes = Counter(), Counter()
    pooled: list[np.ndarray] = []
    chan_means: list[np.ndarray] = []
    mask_counts: dict[str, dict[int, int]] = {}
    first_seen: dict[int, str] = {}
    n_slices = 0
    for i, rec in enumerate(records):
        try:
            raw = store.read_raw(i)
        except DataError as e:
            problems.append(str(e))
            continue
        img = raw.image
        channels[img.shape[-1]] += 1
        dtypes[str(img.dtype)] += 1
        if img.ndim == 4:
            depths.append(img.shape[0])
            n_slices += img.shape[0]
        else:
            n_slices += 1
        heights.append(img.shape[-3])
        widths.append(img.shape[-2])
        if raw.spacing is not None:
            spacings.append(raw.spacing)
        flat = img.reshape(-1, img.shape[-1])
        step = max(1, flat.shape[0] // 20000)
        pooled.append(flat[::step].astype(np.float64).ravel())
        chan_means.append(flat[::step].astype(np.float64).mean(0))
        if raw.mask is not None:
            mask_counts[rec.id] = _counts(raw.mask)
            for v in mask_counts[rec.id]:
                first_seen.setdefault(v, str(rec.mask))
    values = set().union(*[set(c) for c in mask_counts.values()]) if mask_counts else set()
    mapping: dict[int, int] | None = None
    if cfg.mask_threshold is None:
        try:
            mapping = (
                dict(cfg.mask_values)
                if cfg.mask_values is not None
                else auto_mapping(values, cfg.num_classes, str(cfg.root), first_seen)
            )
        except DataError as e:
            problems.append(str(e))
    n_classes = cfg.num_classes or (
        2 if mapping is None else max(2, max([v for v in mapping.values() if v != 255], default=1) + 1)
    )
    found = class_names_from_root(Path(cfg.root) if cfg.root and Path(cfg.root).is_dir() else None)
    if fmt == "synthetic":
        from medseg.data.synthetic import class_names

        found = class_names(cfg.synthetic.kind)
    names = _names(cfg, n_classes, found)
    class_pixels = np.zeros(n_classes, np.int64)
    presence = np.zeros(n_classes, np.int64)
    empty: list[str] = []
    mask_path = {r.id: str(r.mask) for r in records}
    for cid, counts in mask_counts.items():
        per = np.zeros(n_classes, np.int64)
        for v, c in counts.items():
            if cfg.mask_threshold is not None:
                k = int(v >= cfg.mask_threshold)
            elif mapping is not None and v in mapping:
                k = mapping[v]
            else:
                if mapping is not None:
                    problems.append(f"{mask_path[cid]}: mask value {v} is not in the class mapping")
                continue
            if 0 <= k < n_classes:
                per[k] += c
        class_pixels += per
        presence += per > 0
        if per[1:].sum() == 0:
            empty.append(cid)
    total = int(class_pixels.sum())
    mapped = bool(mask_counts) and (mapping is not None or cfg.mask_threshold is not None)
    intensity = None
    if pooled:
        allv = np.concatenate(pooled)
        intensity = {
            "min": float(allv.min()),
            "max": float(allv.max()),
            "mean": float(allv.mean()),
            "std": float(allv.std()),
            "p0_5": float(np.percentile(allv, 0.5)),
            "p99_5": float(np.percentile(allv, 99.5)),
            "channel_means": [float(v) for v in np.mean(chan_means, axis=0)],
        }
    split: dict[str, Any] | None = None
    try:
        root = Path(cfg.root) if cfg.root is not None and Path(cfg.root).is_dir() else None
        sp = split_ids([r.id for r in store.records], root if fmt != "synthetic" else None, cfg)
        split = {k: len(v) for k, v in sp.items()}
        split["source"] = "split files" if read_split_files(root) else f"seeded (seed {cfg.split.seed})"
    except DataError as e:
        problems.append(str(e))
    sp_arr = np.asarray(spacings, dtype=float) if spacings else None
    return {
        "root": str(cfg.root) if cfg.root is not None else "synthetic",
        "format": fmt,
        "num_cases": len(records),
        "num_labelled": len(mask_counts),
        "num_volumes": len(depths),
        "num_slices": n_slices,
        "has_roi": any(r.roi is not None for r in records),
        "split": split,
        "channels": {str(k): v for k, v in sorted(channels.items())},
        "dtypes": dict(dtypes),
        "size": {"height": _summary(heights), "width": _summary(widths), "depth": _summary(depths)},
        "intensity": intensity,
        "mask_values": sorted(values),
        "class_mapping": (None if mapping is None else {str(k): v for k, v in mapping.items()}),
        "mask_threshold": cfg.mask_threshold,
        "num_classes": n_classes,
        "class_names": names,
        "class_frequency": (
            {n: (float(c) / total if total else 0.0) for n, c in zip(names, class_pixels)} if mapped else None
        ),
        "class_presence": {n: int(p) for n, p in zip(names, presence)} if mapped else None,
        "empty_masks": len(empty) if mapped else None,
        "empty_mask_ids": empty[:20],
        "spacing": (
            None
            if sp_arr is None
            else {
                "min": sp_arr.min(0).tolist(),
                "median": np.median(sp_arr, 0).tolist(),
                "max": sp_arr.max(0).tolist(),
            }
        ),
        "problems": problems,
    }


def save_fingerprint(fp: dict[str, Any], path: str | Path) -> Path:
    from medseg.atomic import atomic_write_text

    return atomic_write_text(path, json.dumps(fp, indent=2) + "\n")


def _rng(s: dict | None, fmt: str = "{:g}") -> str:
    if not s:
        return "-"
    if s["min"] == s["max"]:
        return fmt.format(s["min"])
    return f"{fmt.format(s['min'])} .. {fmt.format(s['max'])} (median {fmt.format(s['median'])})"


def fingerprint_table(fp: dict[str, Any]):
    """A two-column :class:`rich.table.Table` of a fingerprint."""
    from rich.table import Table

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
