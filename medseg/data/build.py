"""Entry points of the data layer: :func:`build_data` for training, :func:`open_cases` for prediction.

Both run the same chain: discovery (:mod:`medseg.data.discovery`) -> a :class:`CaseStore` whose
dataset-wide :class:`Settings` (channels, label mapping, normalisation) are decided once from a
scan of the data -> splits (:mod:`medseg.data.splits`) -> datasets (:mod:`medseg.data.datasets`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from medseg.data.case_store import CaseStore, Settings
from medseg.data.config import AugmentConfig, DataConfig
from medseg.data.datasets import CaseDataset, DataBundle, TrainDataset
from medseg.data.discovery import discover
from medseg.data.folds import store_strata
from medseg.data.labels import IGNORE, auto_mapping, class_names_from_root, memory_names, resolve_class_names
from medseg.data.patch_dataset import PatchDataset
from medseg.data.splits import SplitIds, split_ids
from medseg.errors import ConfigError


def _settings(
    store: CaseStore, cfg: DataConfig, validate_all: bool, names: list[str] | None, where: str
) -> Settings:
    num_classes = cfg.num_classes or (len(cfg.class_names) if cfg.class_names else None)
    values, channels = store.scan(num_classes, validate_all)
    first = min(channels) if channels else 0
    in_ch = cfg.in_channels or (channels[first] if channels else 1)
    if cfg.mask_threshold is not None:  # binary masks: the threshold wins over declared names
        if num_classes not in (None, 2):
            raise ConfigError(
                f"data.mask_threshold makes the masks binary (2 classes), but {num_classes} classes are "
                "configured (data.num_classes / data.class_names); drop one of them"
            )
        mapping = None
        n = 2
    else:
        mapping = (
            dict(cfg.mask_values)
            if cfg.mask_values is not None
            else auto_mapping(set(values), num_classes, where, values)
        )
        classes = [v for v in mapping.values() if v != IGNORE]
        n = num_classes or max(2, (max(classes) + 1) if classes else 2)
    if names is not None and num_classes is None and cfg.mask_threshold is None and len(names) > n:
        n = len(names)
    src = store.records[first].source if channels else ""
    return Settings(in_ch, mapping, cfg.mask_threshold, n, cfg.normalize, cfg.intensity_clip, src)


def _root_dir(cfg: DataConfig) -> Path | None:
    """``cfg.root`` when it is a folder (split files and class names live there), else None."""
    root = None if cfg.root is None else Path(cfg.root).expanduser()
    return root if root is not None and root.is_dir() else None


def build_store(
    cfg: DataConfig, *, require_masks: bool = True, use_masks: bool = True, validate: bool | None = None
) -> tuple[CaseStore, str, list[str]]:
    """Discover, scan and validate a dataset; returns the store, the format and the class names."""
    records, memory, fmt = discover(cfg, require_masks)
    if not use_masks:
        for r in records:
            r.mask = None if r.kind != "array" else r.mask  # arrays hold image and label in one file
    store = CaseStore(records, cfg, memory)
    store.use_masks = use_masks
    root = None if cfg.root is None else Path(cfg.root).expanduser()
    found_names = memory_names(cfg) if fmt == "synthetic" else class_names_from_root(_root_dir(cfg))
    validate_all = cfg.validate_on_load if validate is None else validate
    store.settings = _settings(store, cfg, validate_all, found_names, str(root or "synthetic"))
    if validate_all:
        for i in range(len(records)):
            store.get(i)  # maps masks: raises on unknown values
    return store, fmt, resolve_class_names(cfg, store.settings.num_classes, found_names)


def _split_indices(store: CaseStore, root: Path | None, cfg: DataConfig) -> tuple[dict, dict]:
    """Split ids and, per split, the positions of its cases in the store."""
    splits = split_ids([r.id for r in store.records], root, cfg, strata=lambda: store_strata(store))
    pos = {r.id: k for k, r in enumerate(store.records)}
    return splits, {k: [pos[i] for i in v] for k, v in splits.items()}


def build_data(
    cfg: DataConfig,
    aug: AugmentConfig | None = None,
    *,
    seed: int = 0,
    extra_targets: tuple[str, ...] = (),
    target_options: Mapping[str, Mapping] | None = None,
) -> DataBundle:
    """Build the training, validation and test datasets of ``cfg``.

    ``extra_targets`` ("weight_map", "edge") add per-sample targets computed from the augmented
    mask with :mod:`medseg.data.edges`; ``target_options`` passes keyword arguments to them, e.g.
    ``{"weight_map": {"w0": 10, "sigma": 5}, "edge": {"width": 1}}``.
    """
    aug = aug or AugmentConfig()
    store, fmt, names = build_store(cfg)
    splits: dict[str, list[str]]
    if cfg.val_root is not None:
        splits, idx, val = _separate_val(store, cfg)
    else:
        splits, idx = _split_indices(store, _root_dir(cfg) if fmt != "synthetic" else None, cfg)
        val = CaseDataset(store, idx["val"])
    train: TrainDataset | PatchDataset
    if cfg.patch_size is not None:
        train = PatchDataset(store, idx["train"], cfg, aug, seed)
    else:
        train = TrainDataset(store, idx["train"], cfg, aug, seed, tuple(extra_targets), target_options)
    test = CaseDataset(store, idx["test"])
    s = store.settings
    assert s is not None
    volumetric = (test if len(test) else val).volumetric if (len(test) or len(val)) else False
    return DataBundle(train, val, test, s.num_classes, names, s.in_channels, volumetric, cfg, splits, store)


def _separate_val(store: CaseStore, cfg: DataConfig) -> tuple[dict[str, list[str]], dict, CaseDataset]:
    """``data.val_root``: every case under ``root`` trains, the cases of ``val_root`` validate
    (read with the training store's settings: channels, label mapping, normalisation)."""
    assert cfg.val_root is not None
    vcfg = cfg.model_copy(update={"root": cfg.val_root, "format": "auto", "val_root": None})
    records, memory, _ = discover(vcfg, True)
    vstore = CaseStore(records, vcfg, memory)
    vstore.settings = store.settings
    ids = [r.id for r in store.records]
    clash = sorted(set(ids) & {r.id for r in records})
    if clash:
        raise ConfigError(
            f"{cfg.val_root}: case '{clash[0]}' is also under data.root ({len(clash)} shared ids)"
        )
    splits = SplitIds({"train": ids, "val": [r.id for r in records], "test": []}, "data.val_root")
    return (
        splits,
        {"train": list(range(len(ids))), "test": []},
        CaseDataset(vstore, list(range(len(records)))),
    )


def _source_config(
    source: str | Path | DataConfig, cfg: DataConfig | None, in_channels: int | None, num_classes: int | None
) -> DataConfig:
    if isinstance(source, DataConfig):
        dcfg = source
    else:
        base = cfg or DataConfig(root=Path(source))
        dcfg = base.model_copy(update={"root": Path(source), "format": "auto"})  # layout of the new source
    update: dict = {}
    if in_channels is not None:
        update["in_channels"] = in_channels
    if num_classes is not None:
        update["num_classes"] = num_classes
        if dcfg.class_names is not None and len(dcfg.class_names) != num_classes:
            update["class_names"] = None
    return dcfg.model_copy(update=update) if update else dcfg


def open_cases(
    source: str | Path | DataConfig,
    *,
    cfg: DataConfig | None = None,
    split: str | None = None,
    masks: bool | None = None,
    in_channels: int | None = None,
    num_classes: int | None = None,
) -> CaseDataset:
    """Cases of an arbitrary image folder / file / dataset, for prediction and evaluation.

    ``source``: a path (a folder with or without images/ + masks/, one image, an .h5/.npz file, a NIfTI
    file or folder) or a :class:`DataConfig`. ``cfg``: the training data config whose channel
    conversion, mask mapping and normalisation are reused (its root is replaced by ``source``).
    ``split``: only that split's cases (same split rules as :func:`build_data`). ``masks``: True requires
    masks, False ignores them, None (default) uses them where present. ``in_channels`` /
    ``num_classes``: what the model expects (e.g. from its checkpoint); images are converted to it.
    """
    dcfg = _source_config(source, cfg, in_channels, num_classes)
    store, _, _ = build_store(dcfg, require_masks=bool(masks), use_masks=masks is not False)
    indices = list(range(len(store.records)))
    if split is not None:
        if split not in ("train", "val", "test"):
            raise ValueError("split must be 'train', 'val' or 'test'")
        indices = _split_indices(store, _root_dir(dcfg), dcfg)[1][split]
    return CaseDataset(store, indices)
