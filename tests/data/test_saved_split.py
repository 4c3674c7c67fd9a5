"""A run's saved ``splits.json`` reused through ``data.split.file``: the same ids, whatever the seed."""

from __future__ import annotations

from pathlib import Path

import pytest

from medseg.data.config import DataConfig, SplitConfig
from medseg.data.splits import save_splits, split_ids
from medseg.errors import ConfigError, DataError


def _cfg(**split) -> DataConfig:
    return DataConfig(root=Path("."), split=SplitConfig(**split))


IDS = [f"img{i:02d}" for i in range(20)]


def test_a_saved_plain_split_is_reused_exactly(tmp_path):
    first = split_ids(IDS, None, _cfg(seed=1, val_fraction=0.25))
    path = save_splits(tmp_path / "splits.json", first, _cfg(seed=1))
    again = split_ids(IDS, None, _cfg(seed=7, val_fraction=0.5, file=path))  # other seed: file wins
    assert {k: again[k] for k in ("train", "val", "test")} == {k: first[k] for k in ("train", "val", "test")}


def test_a_saved_fold_table_gives_every_fold(tmp_path):
    strata = {i: frozenset({1}) if int(i[3:]) % 3 else frozenset() for i in IDS}
    first = split_ids(IDS, None, _cfg(folds=4, fold=0, seed=2), strata=strata)
    path = save_splits(tmp_path / "splits.json", first, _cfg(folds=4, fold=0, seed=2))
    assert first.plan is not None
    for k in range(4):
        sp = split_ids(IDS, None, _cfg(folds=4, fold=k, seed=99, file=path))
        assert sp["val"] == list(first.plan.folds[k])
        assert set(sp["train"]) == set(first.plan.pool) - set(sp["val"])
        assert sp.plan is not None and sp.plan.stratified


def test_saved_split_errors_name_the_file(tmp_path):
    path = save_splits(tmp_path / "splits.json", split_ids(IDS, None, _cfg(folds=4, fold=0)), _cfg(folds=4))
    with pytest.raises(ConfigError, match="splits.json: defines 4 folds"):
        split_ids(IDS, None, _cfg(folds=5, file=path))
    with pytest.raises(DataError, match="splits.json: lists 'img"):
        split_ids(IDS[:10], None, _cfg(folds=4, file=path))
    plain = save_splits(tmp_path / "plain.json", split_ids(IDS, None, _cfg()), _cfg())
    with pytest.raises(ConfigError, match="no cross-validation table"):
        split_ids(IDS, None, _cfg(folds=4, file=plain))
