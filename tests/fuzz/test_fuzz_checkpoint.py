"""Fuzzing the checkpoint header (and the file around it): medseg's safetensors header
validation must turn every bad header into one CheckpointError line naming the file, before a
model is built from it, whatever the JSON holds (missing or mistyped fields, odd model options,
huge sizes, nested values, region definitions) and whatever happened to the bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fuzz_outcome import outcome
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import save_file

from medseg.engine.checkpoint import FORMAT, load_inference_model
from medseg.engine.predict import open_checkpoint
from medseg.models import build_model

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
HUGE = st.sampled_from([-1, 0, 1, 3, 2**15, 60_000, 2**31 - 1, 2**63 - 1])
STATE_KEYS = (
    "model_name",
    "model_options",
    "in_channels",
    "num_classes",
    "out_channels",
    "task_mode",
    "class_names",
    "config",
    "regions",
    "region_names",
)
OPTION_KEYS = ("depth", "base_width", "norm", "deep_supervision", "max_width", "dims", "nonsense")


def valid_state() -> dict:
    return {
        "model_name": "unet",
        "model_options": {"depth": 2, "base_width": 4},
        "in_channels": 3,
        "num_classes": 4,
        "out_channels": 3,
        "task_mode": "multilabel",
        "class_names": ["bg", "a", "b", "c"],
        "regions": [[1, 2, 3], [2, 3], [3]],
        "region_names": ["whole", "core", "enhancing"],
        "config": {"data": {"regions": {"whole": [1, 2, 3], "core": [2, 3], "enhancing": [3]}}},
    }


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model("unet", 3, 3, depth=2, base_width=4)
    return {f"model.{k}": v.detach().clone().contiguous() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz_ckpt")


@st.composite
def states(draw) -> dict:
    state = valid_state()
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["drop", "set", "option", "name"]))
        key = draw(st.sampled_from(STATE_KEYS))
        if action == "drop":
            state.pop(key, None)
        elif action == "set":
            state[key] = draw(JSON | HUGE)
        elif action == "option" and isinstance(state.get("model_options"), dict):
            state["model_options"][draw(st.sampled_from(OPTION_KEYS))] = draw(JSON | HUGE)
        else:
            state["model_name"] = draw(
                st.sampled_from(["unet", "unet3d", "fcn8s", "segnet", "befunet", "nope"])
            )
    return state


@st.composite
def headers(draw) -> str:
    kind = draw(st.sampled_from(["state", "state", "state", "meta", "text"]))
    if kind == "text":
        return draw(st.text(max_size=40))
    if kind == "meta":
        return json.dumps(draw(JSON))
    meta = {"format": draw(st.sampled_from([FORMAT, FORMAT, "medseg-checkpoint-0"])), "state": draw(states())}
    return json.dumps(meta)


@st.composite
def damage(draw, data: bytes) -> bytes:
    kind = draw(st.sampled_from(["none", "none", "truncate", "flip", "size"]))
    if kind == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    if kind == "flip":
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 6))):
            out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
        return bytes(out)
    if kind == "size":  # the 8-byte little-endian header length that opens a safetensors file
        return draw(HUGE.map(lambda v: v % 2**64)).to_bytes(8, "little") + data[8:]
    return data


def _sound_model(result) -> None:
    model, state = result
    assert isinstance(model, torch.nn.Module) and isinstance(state, dict)


@given(header=headers(), data=st.data())
def test_checkpoint_headers(folder, weights, header, data):
    path = folder / "fuzzed.safetensors"
    save_file(weights, str(path), metadata={"medseg": header})
    path.write_bytes(data.draw(damage(path.read_bytes())))
    outcome("checkpoint: load_inference_model", path, lambda: load_inference_model(path), _sound_model)

    def opened(loaded) -> None:
        assert loaded.task.out_channels == loaded.state.get("out_channels", loaded.task.out_channels)

    outcome("checkpoint: open_checkpoint", path, lambda: open_checkpoint(path, device="cpu"), opened)
