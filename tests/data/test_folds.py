"""K-fold cross-validation: fold assignment, split files (splits.json, nnU-Net splits_final.json)
and the split the trainer gets for fold k."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from medseg.data.config import DataConfig, SplitConfig
from medseg.data.folds import FoldPlan, assign_folds, class_signature, plan_from_nnunet
from medseg.data.splits import fold_plan, group_key, save_splits, split_ids
from medseg.data.splits_io import read_nnunet_splits, read_splits, write_nnunet_splits
from medseg.errors import ConfigError, DataError


def _cfg(root: Path | None = None, **split) -> DataConfig:
    return DataConfig(root=root or Path("."), split=SplitConfig(**split))


def _volume_ids(n_patients: int, slices: int) -> list[str]:
    return [f"patient{p:03d}_frame01_slice_{s}" for p in range(n_patients) for s in range(slices)]


def test_every_case_in_exactly_one_validation_fold():
    ids = [f"img{i:03d}" for i in range(53)]
    folds = assign_folds(ids, 5, seed=3)
    counts = Counter(i for f in folds for i in f)
    assert set(counts) == set(ids) and set(counts.values()) == {1}
    assert sorted(len(f) for f in folds) == [10, 10, 11, 11, 11]
    assert all(f == [i for i in ids if i in set(f)] for f in folds)  # order of ids kept


def test_groups_never_split_between_folds():
    ids = _volume_ids(7, 4) + [f"patient{p:03d}_frame12_slice_{s}" for p in range(7) for s in range(3)]
    folds = assign_folds(ids, 3, seed=0, group_of=group_key)
    fold_of_group: dict[str, set[int]] = {}
    for f, members in enumerate(folds):
        for i in members:
            fold_of_group.setdefault(group_key(i), set()).add(f)
    assert len(fold_of_group) == 7 and all(len(v) == 1 for v in fold_of_group.values())
    assert sum(map(len, folds)) == len(ids)


def test_stratification_balances_a_constructed_set():
    # 50 images, 10 of them without foreground, 5 folds: each fold must get exactly 2 empty ones
    ids = [f"c{i:02d}" for i in range(50)]
    strata = {i: (frozenset() if n % 5 == 0 else frozenset({1})) for n, i in enumerate(ids)}
    for seed in range(5):
        folds = assign_folds(ids, 5, seed=seed, strata=strata)
        assert [sum(not strata[i] for i in f) for f in folds] == [2] * 5
        assert [len(f) for f in folds] == [10] * 5
    # unstratified assignment of the same set does not balance them for every seed (the check can fail)
    unbalanced = [
        [sum(not strata[i] for i in f) for f in assign_folds(ids, 5, seed=s)] != [2] * 5 for s in range(5)
    ]
    assert any(unbalanced)


def test_stratification_of_groups_uses_the_union_of_their_classes():
    # 6 patients with class 2 somewhere in one of their slices, 6 without: 3 folds get 2 + 2 each
    ids, strata = [], {}
    for p in range(12):
        for s in range(3):
            cid = f"patient{p:03d}_slice_{s}"
            ids.append(cid)
            strata[cid] = frozenset({1, 2}) if (p < 6 and s == 1) else frozenset({1})
    folds = assign_folds(ids, 3, seed=1, strata=strata, group_of=group_key)
    with_two = [len({group_key(i) for i in f if 2 in strata[i]}) for f in folds]
    assert with_two == [2, 2, 2]


def test_seeded_determinism():
    ids = [f"c{i:02d}" for i in range(40)]
    assert assign_folds(ids, 4, seed=7) == assign_folds(ids, 4, seed=7)
    assert assign_folds(ids, 4, seed=7) != assign_folds(ids, 4, seed=8)


def test_too_few_groups_is_a_clear_error():
    with pytest.raises(DataError, match="5 folds need at least 5 patients/volumes.*2 group"):
        assign_folds(_volume_ids(2, 5), 5, group_of=group_key)


def test_class_signature():
    m = np.array([[0, 3, 3], [255, 1, 0]], np.uint8)
    assert class_signature(m) == frozenset({1, 3})
    assert class_signature(np.zeros((4, 4, 4), np.uint8)) == frozenset()


def test_fold_split_keeps_the_fixed_test_split_out_of_every_fold(tmp_path):
    ids = [f"img{i:03d}" for i in range(30)]
    (tmp_path / "test.txt").write_text("\n".join(ids[:6]) + "\n")
    cfg = _cfg(tmp_path, folds=4, fold=0)
    plan = fold_plan(ids, tmp_path, cfg)
    assert plan.test == tuple(ids[:6])
    assert not set(plan.test) & {i for f in plan.folds for i in f}
    assert sorted(i for f in plan.folds for i in f) == ids[6:]
    for k in range(4):
        sp = split_ids(ids, tmp_path, cfg.model_copy(update={"split": SplitConfig(folds=4, fold=k)}))
        assert sp["test"] == ids[:6]
        assert set(sp["train"]) | set(sp["val"]) == set(ids[6:]) and not set(sp["train"]) & set(sp["val"])
        assert sp["val"] == list(plan.folds[k])


def test_seeded_test_carve_is_the_same_with_and_without_folds():
    ids = [f"img{i:03d}" for i in range(40)]
    plain = split_ids(ids, None, _cfg(test_fraction=0.25, seed=4))
    folded = split_ids(ids, None, _cfg(test_fraction=0.25, seed=4, folds=5, fold=2))
    assert folded["test"] == plain["test"] and len(plain["test"]) == 10
    assert len(folded["val"]) == 6 and len(folded["train"]) == 24


def test_split_ids_without_folds_is_unchanged():
    ids = [f"img{i:03d}" for i in range(20)]
    sp = split_ids(ids, None, _cfg(val_fraction=0.25, seed=1))
    rng = np.random.default_rng(1)  # the original rule: test carve (0 here), then val carve
    rng.shuffle(sorted(ids))  # nothing held out for test still consumes one shuffle
    groups = sorted(ids)
    rng.shuffle(groups)
    assert sorted(sp["val"]) == sorted(groups[:5]) and sp.plan is None and sp.source == "seeded"


def test_config_checks_the_fold_index():
    with pytest.raises(ValueError, match="split.fold must be in 0..2"):
        SplitConfig(folds=3, fold=3)
    with pytest.raises(ValueError):
        SplitConfig(folds=1)


def test_nnunet_splits_final_round_trip_and_is_honoured(tmp_path):
    ids = [f"case_{i:03d}" for i in range(12)]
    plan = FoldPlan(tuple(ids), tuple(tuple(ids[f::3]) for f in range(3)))
    path = write_nnunet_splits(tmp_path / "splits_final.json", plan.to_nnunet())
    table = read_nnunet_splits(path)
    assert table == json.loads(path.read_text()) == plan.to_nnunet()
    assert plan_from_nnunet(table).folds == plan.folds
    # honoured next to the data: the folds are the file's, not a seeded draw
    sp = split_ids(ids, tmp_path, _cfg(tmp_path, folds=3, fold=1, seed=99))
    assert sp["val"] == list(ids[1::3]) and sp.source.endswith("splits_final.json")
    with pytest.raises(ConfigError, match="defines 3 folds but data.split.folds is 5"):
        split_ids(ids, tmp_path, _cfg(tmp_path, folds=5))


def test_nnunet_splits_final_errors_name_the_file(tmp_path):
    path = tmp_path / "splits_final.json"
    path.write_text(json.dumps([{"train": ["a", "b"], "val": ["b"]}, {"train": ["b"], "val": ["a"]}]))
    with pytest.raises(DataError, match="splits_final.json: fold 0 has 'b' in both train and val"):
        plan_from_nnunet(read_nnunet_splits(path), source=str(path))
    path.write_text(json.dumps({"train": []}))
    with pytest.raises(DataError, match="splits_final.json: expected a list"):
        read_nnunet_splits(path)
    path.write_text(json.dumps([{"train": ["x"], "val": ["y"]}, {"train": ["y"], "val": ["x"]}]))
    with pytest.raises(DataError, match="splits_final.json: lists 'x' but no such case exists"):
        split_ids(["a", "b"], tmp_path, _cfg(tmp_path, folds=2))


def test_splits_json_round_trip(tmp_path):
    ids = [f"img{i:03d}" for i in range(20)]
    cfg = _cfg(folds=4, fold=3, seed=2, test_fraction=0.2)
    sp = split_ids(ids, None, cfg, strata={i: frozenset({1}) for i in ids})
    path = save_splits(tmp_path / "run" / "splits.json", sp, cfg)
    doc = read_splits(path)
    assert (doc["train"], doc["val"], doc["test"]) == (sp["train"], sp["val"], sp["test"])
    assert doc["folds"] == 4 and doc["fold"] == 3 and doc["seed"] == 2 and doc["stratified"] is True
    assert doc["cross_validation"] == sp.plan.to_nnunet()
    assert not list(path.parent.glob(".*tmp"))  # atomic writer left nothing behind
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(DataError, match="bad.json: not a medseg splits file"):
        read_splits(tmp_path / "bad.json")


def test_build_data_trains_on_fold_k_with_stratified_folds():
    from medseg.data.build import build_data

    base = {"format": "synthetic", "synthetic": {"n": 16, "size": 16}, "size": (16, 16)}
    vals = []
    for k in range(4):
        cfg = DataConfig(**base, split=SplitConfig(folds=4, fold=k, test_fraction=0.25))
        bundle = build_data(cfg)
        sp = bundle.splits
        assert sp.plan is not None and sp.plan.stratified and len(sp["test"]) == 4
        assert len(bundle.train) == len(sp["train"]) and len(bundle.val) == len(sp["val"])
        vals.append(sp["val"])
    assert sorted(i for v in vals for i in v) == sorted(sp.plan.pool) and len(sp.plan.pool) == 12


def test_real_acdc_patients_keep_both_frames_in_one_fold(real_data):
    root = real_data("acdc-nifti") / "testing"
    ids = sorted(p.name[: -len("_gt.nii.gz")] for p in root.glob("patient*/*_gt.nii.gz"))
    assert len(ids) == 80
    plan = fold_plan(ids, None, _cfg(folds=5, test_fraction=0.2))
    patients_in = [{group_key(i) for i in f} for f in plan.folds]
    assert sum(len(p) for p in patients_in) == 32 and not set().union(*patients_in) & {
        group_key(i) for i in plan.test
    }
    assert all(len(f) == 2 * len(p) for f, p in zip(plan.folds, patients_in))  # both frames of each patient


def test_opening_a_fold_split_without_masks_is_an_error_not_other_folds():
    from medseg.data.build import open_cases

    cfg = DataConfig(
        format="synthetic", synthetic={"n": 12, "size": 16}, size=(16, 16), split=SplitConfig(folds=3, fold=1)
    )
    with_masks = open_cases(cfg, split="val", masks=True)
    assert len(with_masks) == 4
    with pytest.raises(ConfigError, match="stratified cross-validation folds need the masks"):
        open_cases(cfg, split="val", masks=False)
    plain = cfg.model_copy(update={"split": SplitConfig(folds=3, fold=1, stratify=False)})
    assert len(open_cases(plain, split="val", masks=False)) == 4
