"""``medseg predict`` never loses an output: unique file names, and no writing into the
inputs' own data set (its ground-truth masks) or over earlier masks without ``overwrite``."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from medseg.config import load_config
from medseg.engine.checkpoint import save_checkpoint
from medseg.engine.distributed import Distributed
from medseg.engine.mask_files import unique_names
from medseg.engine.predictor import predict_folder
from medseg.engine.train_setup import build_parts
from medseg.errors import MedsegError

TINY = [
    "data.format=synthetic",
    "data.synthetic.n=8",
    "data.synthetic.size=32",
    "data.size=[32,32]",
    "model.options={depth: 2, base_width: 4}",
    "train.log_tensorboard=false",
]
NAMES = ["a b", "a_b", "a?b", "a:b"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    parts = build_parts(load_config(None, TINY + [f"output_dir={out}"]), Distributed(), torch.device("cpu"))
    return save_checkpoint(out / "best.safetensors", parts.model, parts.model_state)


def _images(folder, names):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{name}.png")


def test_unique_names_disambiguate_collisions_and_case():
    assert unique_names(["a b", "a_b", "a?b", "A_B", "x"]) == ["a_b", "a_b-2", "a_b-3", "A_B-4", "x"]
    assert unique_names(["a_b", "a b", "a_b-2"]) == ["a_b", "a_b-2", "a_b-2-2"]


def test_colliding_case_ids_get_distinct_files_and_a_name_map(checkpoint, tmp_path):
    _images(tmp_path / "in", NAMES)
    result = predict_folder(checkpoint, tmp_path / "in", tmp_path / "out", device="cpu")
    assert result["count"] == 4
    masks = sorted(p.name for p in (tmp_path / "out" / "masks").iterdir())
    overlays = sorted(p.name for p in (tmp_path / "out" / "overlays").iterdir())
    assert len(masks) == 4 and len(overlays) == 4
    with open(tmp_path / "out" / "names.csv", newline="") as fh:
        mapping = {r["case_id"]: r["file"] for r in csv.DictReader(fh)}
    assert sorted(mapping) == sorted(NAMES)
    assert sorted(f"{v}.png" for v in mapping.values()) == masks


def test_predicting_into_a_dataset_is_refused(checkpoint, tmp_path):
    data = tmp_path / "d2"
    _images(data / "images", ["c1", "c2"])
    (data / "masks").mkdir()
    truth = np.zeros((32, 32), np.uint8)
    truth[4:9, 4:9] = 255
    for name in ("c1", "c2"):
        Image.fromarray(truth).save(data / "masks" / f"{name}.png")
    before = {p.name: p.read_bytes() for p in (data / "masks").iterdir()}
    for out in (data, data / "images", data / "preds"):
        with pytest.raises(MedsegError, match="inputs' own folder"):
            predict_folder(checkpoint, data / "images", out, device="cpu")
    assert {p.name: p.read_bytes() for p in (data / "masks").iterdir()} == before
    predict_folder(checkpoint, data / "images", tmp_path / "pred", device="cpu")
    with pytest.raises(MedsegError, match="already holds masks"):
        predict_folder(checkpoint, data / "images", tmp_path / "pred", device="cpu")
    predict_folder(checkpoint, data / "images", tmp_path / "pred", device="cpu", overwrite=True)
    predict_folder(checkpoint, data / "images", data, device="cpu", overwrite=True)
    assert {p.name: p.read_bytes() for p in (data / "masks").iterdir()} != before


def test_predict_streams_its_inputs(checkpoint, tmp_path, monkeypatch):
    """Each input is decoded when it is predicted and nothing is cached: the first prediction
    comes before the last decode, and the store holds no decoded case afterwards."""
    from medseg.data.case_store import CaseStore
    from medseg.engine.predict import LoadedCheckpoint

    events: list[str] = []
    stores: list[CaseStore] = []
    read_raw, predict = CaseStore.read_raw, LoadedCheckpoint.predict

    def spy_read(self, i):
        stores.append(self)
        events.append("decode")
        return read_raw(self, i)

    def spy_predict(self, case, **kw):
        events.append("predict")
        return predict(self, case, **kw)

    monkeypatch.setattr(CaseStore, "read_raw", spy_read)
    monkeypatch.setattr(LoadedCheckpoint, "predict", spy_predict)
    _images(tmp_path / "in", [f"c{i}" for i in range(6)])
    predict_folder(checkpoint, tmp_path / "in", tmp_path / "out", device="cpu")
    last_decode = len(events) - 1 - events[::-1].index("decode")
    assert events.index("predict") < last_decode
    assert events.count("predict") == 6
    assert all(not s._cache and not s._raw for s in stores)


def test_evaluate_keeps_no_decoded_case(checkpoint, tmp_path, monkeypatch):
    """``evaluate`` decodes each case when it scores it; the store caches none of them, and
    only the overlays of the worst ``eval.overlays`` cases are held."""
    from medseg.data.case_store import CaseStore
    from medseg.engine import evaluator
    from medseg.engine.evaluator import evaluate_checkpoint

    held: list[int] = []
    keep_worst = evaluator.keep_worst

    def spy_keep(kept, records, count):
        out = keep_worst(kept, records, count)
        held.append(len(out))
        return out

    monkeypatch.setattr(evaluator, "keep_worst", spy_keep)

    stores: list[CaseStore] = []
    get = CaseStore.get

    def spy_get(self, i):
        stores.append(self)
        return get(self, i)

    monkeypatch.setattr(CaseStore, "get", spy_get)
    data = tmp_path / "d"
    _images(data / "images", [f"c{i}" for i in range(4)])
    (data / "masks").mkdir()
    for i in range(4):
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(data / "masks" / f"c{i}.png")
    result = evaluate_checkpoint(
        checkpoint, overrides=["eval.overlays=2"], data_root=data, out_dir=tmp_path / "eval", device="cpu"
    )
    assert len(result["records"]) >= 4 and stores
    assert held and max(held) <= 2
    assert len(list((tmp_path / "eval" / "overlays").iterdir())) == 2
    assert all(not s._cache and not s._raw for s in stores)
