"""Which overlapping regions ``medseg score`` scores, and where their definition comes from.

A *region* is a set of labels scored as one mask, ``label in region``, in the prediction and in
the reference: nnU-Net's region-based evaluation (Isensee et al. 2021, Nat. Methods 18:203;
BraTS whole tumour ``{1, 2, 3}``, tumour core ``{2, 3}``, enhancing tumour ``{3}``). The same
form as a config's ``data.regions`` (``{name: [labels]}``, see :mod:`medseg.data.regions`).

Where the definition is read (:func:`resolve_regions`), first match wins:

1. ``regions`` given (``medseg score --regions SPEC``): a mapping; an inline spec, YAML/JSON
   (``"{wt: [1, 2, 3], tc: [2, 3], et: [3]}"``) or the shell-friendly ``"wt=1,2,3;tc=2,3;et=3"``;
   or a file: a YAML/JSON mapping, a medseg config (its ``data.regions``), a run folder (its
   ``config.yaml``), or an nnU-Net ``dataset.json``. ``"none"`` scores per label.
2. A ``dataset.json`` beside the references (or one folder up, as nnU-Net's ``labelsTr/``) that
   declares regions in nnU-Net v2's form: ``"labels": {"background": 0, "whole_tumor": [1, 2, 3],
   "tumor_core": [2, 3], "enhancing_tumor": 3}`` (with ``regions_class_order``). As nnU-Net's
   ``LabelManager``, a dataset is region-based when some label value is a list of more than one
   label; the regions are the non-background entries in their written order, and an ``"ignore"``
   label marks reference voxels left out of every metric.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from medseg.errors import ConfigError, DataError

RegionSpec = str | Path | Mapping[str, Sequence[int] | int]
__all__ = ["RegionSpec", "ScoreRegions", "regions_from_dataset_json", "resolve_regions"]


@dataclass(frozen=True)
class ScoreRegions:
    """Regions to score: ``names[i]`` is the union of the labels ``sets[i]``; ``source`` says
    where the definition was read; ``ignore_label``: reference value left out (nnU-Net ignore)."""

    names: tuple[str, ...]
    sets: tuple[tuple[int, ...], ...]
    source: str
    ignore_label: int | None = None

    def as_dict(self) -> dict[str, list[int]]:
        return {n: list(s) for n, s in zip(self.names, self.sets)}


def _labels_of(value: Any, where: str) -> tuple[int, ...]:
    items = value if isinstance(value, list | tuple) else [value]
    out = []
    for v in items:
        if isinstance(v, bool) or not isinstance(v, int | float) or int(v) != v:
            raise ConfigError(f"{where}: labels must be integers, got {v!r}")
        out.append(int(v))
    return tuple(sorted(set(out)))


def checked_regions(
    regions: Any, where: str, num_classes: int | None = None, source: str | None = None
) -> ScoreRegions:
    """``{name: [labels]}`` checked: at least one region, each with foreground labels (>= 1, and
    < ``num_classes`` when given), no two regions alike, no region called ``background``."""
    if not isinstance(regions, Mapping) or not regions:
        raise ConfigError(f"{where}: give regions as {{name: [labels]}}, e.g. {{wt: [1, 2, 3], et: [3]}}")
    names: list[str] = []
    sets: list[tuple[int, ...]] = []
    for name, value in regions.items():
        labels = _labels_of(value, f"{where}: region {name}")
        if not labels:
            raise ConfigError(f"{where}: region {name} needs at least one label")
        if labels[0] < 1:
            raise ConfigError(f"{where}: region {name} holds label {labels[0]} (background 0 never does)")
        if num_classes is not None and labels[-1] >= num_classes:
            raise ConfigError(
                f"{where}: region {name} holds label {labels[-1]}, outside 1..{num_classes - 1} "
                f"(--num-classes {num_classes})"
            )
        if str(name) == "background":
            raise ConfigError(f"{where}: 'background' cannot name a region (the report's class 0)")
        if labels in sets:
            raise ConfigError(f"{where}: regions {names[sets.index(labels)]} and {name} hold the same labels")
        names.append(str(name))
        sets.append(labels)
    return ScoreRegions(tuple(names), tuple(sets), source or where)


def regions_from_dataset_json(doc: Mapping[str, Any], where: str) -> ScoreRegions | None:
    """The regions an nnU-Net v2 ``dataset.json`` declares, or None when it is label-based
    (no label value is a list of more than one label)."""
    labels = doc.get("labels")
    if not isinstance(labels, Mapping):
        raise DataError(f"{where}: no 'labels' mapping")
    if not any(isinstance(v, list | tuple) and len(v) > 1 for v in labels.values()):
        return None
    ignore = labels.get("ignore")
    if ignore is not None and (isinstance(ignore, bool) or not isinstance(ignore, int)):
        raise DataError(f"{where}: the ignore label must be one integer, got {ignore!r}")
    fg = {k: v for k, v in labels.items() if k != "ignore" and set(_labels_of(v, f"{where}: {k}")) != {0}}
    found = checked_regions(fg, where)
    return ScoreRegions(found.names, found.sets, where, ignore)


def _read_document(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as e:
        raise DataError(f"{path}: cannot read regions ({str(e).splitlines()[0]})") from None


def _from_document(doc: Any, where: str, num_classes: int | None) -> ScoreRegions:
    """Regions from a parsed document: dataset.json, a config (``data.regions``), or a mapping."""
    if isinstance(doc, Mapping) and isinstance(doc.get("labels"), Mapping):
        found = regions_from_dataset_json(doc, where)
        if found is None:
            raise ConfigError(f"{where}: its labels declare no regions (no label is a list of labels)")
        checked_regions(found.as_dict(), where, num_classes)  # labels within --num-classes
        return found
    if isinstance(doc, Mapping) and isinstance(doc.get("data"), Mapping):
        if not doc["data"].get("regions"):
            raise ConfigError(
                f"{where}: data.regions is not set (a label-based run: score without --regions)"
            )
        return checked_regions(doc["data"]["regions"], f"{where}: data.regions", num_classes, where)
    return checked_regions(doc, where, num_classes)


def _shorthand(spec: str) -> dict[str, list[int]]:
    """``"wt=1,2,3;tc=2,3;et=3"`` -> ``{"wt": [1, 2, 3], "tc": [2, 3], "et": [3]}``."""
    out: dict[str, list[int]] = {}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        name, _, values = part.partition("=")
        try:
            out[name.strip()] = [int(v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise ConfigError(f"--regions {spec!r}: {part!r} is not NAME=LABEL,LABEL,...") from None
    return out


def _from_spec(spec: str | Path, num_classes: int | None) -> ScoreRegions:
    path = Path(spec)
    if path.is_dir():  # a run folder (config.yaml) or a dataset (dataset.json)
        for name in ("config.yaml", "dataset.json"):
            if (path / name).is_file():
                return _from_document(_read_document(path / name), str(path / name), num_classes)
        raise DataError(f"{path}: neither config.yaml nor dataset.json to read regions from")
    if path.is_file():
        return _from_document(_read_document(path), str(path), num_classes)
    text = str(spec).strip()
    if text.startswith("{"):
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(
                f"--regions {text!r}: not a YAML/JSON mapping ({str(e).splitlines()[0]})"
            ) from None
        return _from_document(doc, "--regions", num_classes)
    if "=" in text:
        return checked_regions(_shorthand(text), "--regions", num_classes)
    raise ConfigError(
        f"--regions {text!r}: no such file or folder, and not an inline spec such as "
        "'{wt: [1, 2, 3], tc: [2, 3], et: [3]}' or 'wt=1,2,3;tc=2,3;et=3'"
    )


def _beside(ref_dir: Path) -> ScoreRegions | None:
    """Regions of a region-based nnU-Net ``dataset.json`` next to the references, if any."""
    for d in (ref_dir, ref_dir.parent):  # dataset.json sits beside labelsTr/ in nnU-Net
        path = d / "dataset.json"
        if path.is_file():
            doc = _read_document(path)
            if not (isinstance(doc, Mapping) and isinstance(doc.get("labels"), Mapping)):
                return None  # not nnU-Net's form: scored per class
            return regions_from_dataset_json(doc, str(path))
    return None


def resolve_regions(
    regions: RegionSpec | None, ref_dir: Path, num_classes: int | None = None, *, auto: bool = True
) -> ScoreRegions | None:
    """The regions to score (module docstring: given, else a region-based ``dataset.json``
    beside the references when ``auto``), or None to score per label."""
    if isinstance(regions, str) and regions.strip().lower() == "none":
        return None
    if isinstance(regions, Mapping):
        return checked_regions(regions, "regions", num_classes, "given")
    if regions is not None:
        return _from_spec(regions, num_classes)
    return _beside(Path(ref_dir)) if auto else None
