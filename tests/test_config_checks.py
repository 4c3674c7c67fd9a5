"""Config checks added for usability: finite numbers, seed range, devices, windows, ${VAR} kept
unexpanded in what is saved."""

from __future__ import annotations

import pytest

from medseg.config import check_device, load_config
from medseg.errors import ConfigError


@pytest.mark.parametrize(
    "override",
    [
        "optim.lr=inf",
        "optim.lr=.nan",
        "loss.aux_weight=.inf",
        "train.grad_clip=inf",
        "eval.nsd_tolerance=nan",
    ],
)
def test_non_finite_numbers_are_refused(override):
    with pytest.raises(ConfigError, match=override.split("=")[0]):
        load_config(None, [override])


@pytest.mark.parametrize(
    "seed, ok", [(0, True), (2**32 - 1, True), (2**32, False), (-1, False), (2**70, False)]
)
def test_seed_range(seed, ok):
    if ok:
        assert load_config(None, [f"train.seed={seed}"]).train.seed == seed
    else:
        with pytest.raises(ConfigError, match="train.seed"):
            load_config(None, [f"train.seed={seed}"])


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"])
def test_good_devices(device):
    assert check_device(device) == device and load_config(None, [f"train.device={device}"])


@pytest.mark.parametrize("device", ["cuda:abc", "cuda:", "gpu", "cuda0", "cpu:1 "])
def test_bad_devices(device):
    with pytest.raises(ConfigError, match="device"):
        check_device(device)
    with pytest.raises(ConfigError, match="train.device"):
        load_config(None, [f"train.device={device!r}"])


@pytest.mark.parametrize("window", ["[0,0]", "[-8,64]"])
def test_window_must_be_positive(window):
    with pytest.raises(ConfigError, match="eval.window"):
        load_config(None, [f"eval.window={window}"])


def test_env_variables_are_saved_unexpanded(monkeypatch):
    monkeypatch.setenv("MEDSEG_TEST_SECRET", "hunter2")
    cfg = load_config(
        {"data": {"root": "${MEDSEG_TEST_SECRET}/ph2"}, "output_dir": "runs/${MEDSEG_TEST_SECRET:-x}"}
    )
    assert str(cfg.data.root) == "hunter2/ph2" and str(cfg.output_dir) == "runs/hunter2"
    saved = cfg.to_dict()
    assert "hunter2" not in cfg.to_yaml() and saved["data"]["root"] == "${MEDSEG_TEST_SECRET}/ph2"
    assert saved["output_dir"] == "runs/${MEDSEG_TEST_SECRET:-x}"
    # read back (as evaluate/predict read a checkpoint's config) it expands again
    assert str(load_config(saved).data.root) == "hunter2/ph2"
    # a value changed after loading is saved as it is now
    cfg.data.root = "elsewhere"
    assert cfg.to_dict()["data"]["root"] == "elsewhere"
