import pytest

from medseg.config import load_config
from medseg.errors import ConfigError


def test_defaults_and_overrides():
    cfg = load_config(
        None,
        [
            "train.epochs=3",
            "data.format=synthetic",
            "data.size=[64,48]",
            "model.options={base_width: 8}",
            "optim.lr=0.01",
            "loss.name=dice:1+focal:0.5",
        ],
    )
    assert cfg.train.epochs == 3
    assert tuple(cfg.data.size) == (64, 48)
    assert cfg.model.options == {"base_width": 8}
    assert cfg.optim.lr == 0.01
    assert cfg.loss.name == "dice:1+focal:0.5"


def test_yaml_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  name: unet\ntrain:\n  epochs: 2\n")
    assert load_config(p).train.epochs == 2


@pytest.mark.parametrize(
    "override, fragment",
    [
        (["train.epochs=0"], "train.epochs"),
        (["train.epoch=3"], "train.epoch: unknown key"),
        (["optim.name=adam"], "optim.name"),
        (["bogus=1"], "bogus: unknown key"),
        (["optim.momentum=1.5"], "optim.momentum"),
        (["train.device=gpu"], "train.device"),
    ],
)
def test_bad_values_are_rejected_with_the_key(override, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(None, override)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.epochs"])


def test_roundtrip_through_dict():
    cfg = load_config(None, ["train.epochs=7"])
    again = load_config(cfg.to_dict())
    assert again == cfg


def test_presets_validate():
    from pathlib import Path

    presets = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
    assert presets, "configs/ has no presets"
    for p in presets:
        load_config(p)
