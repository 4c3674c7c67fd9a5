"""Model variants declared as presets over one builder (FCN-32s/16s/8s, BEFUnet/-small), the
registry's handling of options, and keyword-only options for every model and loss.

The parameter counts below were computed on the base commit 2690edd with the old variant
functions (``build_fcn32s``/``16s``/``8s``, ``befunet_small``), before the presets replaced
them. They are hard-coded only as a regression check of that refactor: the presets must
build the same networks. The architectures themselves are tested in test_models_zoo.py and
test_befunet.py.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from medseg.errors import ConfigError
from medseg.losses import LOSSES
from medseg.models import MODELS, build_model, count_parameters

# name, options -> parameter count of the old variant function (in_channels=3, num_classes=2)
OLD_VARIANT_COUNTS = [
    ("fcn32s", {}, 134268738),
    ("fcn16s", {}, 134269828),
    ("fcn8s", {}, 134270406),
    ("fcn32s", {"backbone": "resnet18"}, 11177538),
    ("fcn16s", {"backbone": "resnet18"}, 11178116),
    ("fcn8s", {"backbone": "resnet18"}, 11178438),
    ("fcn8s", {"backbone": "vgg16_bn", "width_mult": 0.25, "fc_width": 256}, 1329174),
    ("fcn32s", {"backbone": "resnet18", "output_stride": 8, "head_conv": 64}, 11471682),
    ("befunet", {}, 50854960),
    ("befunet_small", {}, 11071888),
    ("befunet_small", {"decoder_channels": 32}, 10891408),
    ("befunet_small", {"embed_dim": 8, "num_heads": (1, 1, 2, 2), "dlf_heads": (2, 2)}, 451146),
]


@pytest.mark.parametrize(("name", "options", "expected"), OLD_VARIANT_COUNTS)
def test_presets_build_the_same_models_as_the_old_variant_functions(name, options, expected):
    with torch.device("meta"):  # shapes only: no memory for 134 M parameters
        try:
            model = build_model(name, 3, 2, **options)
        except (NotImplementedError, RuntimeError):  # a builder that needs real tensors
            model = None
    if model is None:
        model = build_model(name, 3, 2, **options)
    assert count_parameters(model) == expected


def test_fcn_variants_fix_the_stride_and_keep_the_skip_layers_apart():
    for name, variant in (("fcn32s", 32), ("fcn16s", 16), ("fcn8s", 8)):
        with torch.device("meta"):
            model = build_model(name, 3, 2, width_mult=0.125, fc_width=64)
        assert model.variant == variant
        assert hasattr(model, "score_pool4") == (variant <= 16)
        assert hasattr(model, "score_pool3") == (variant == 8)
        assert "variant" not in MODELS.get(name).option_names()  # fixed by the name, not an option


def test_a_fixed_argument_is_not_an_option():
    # output_stride needs the dilated ResNet of FCN-32s; the skip variants fix it to 32
    assert "output_stride" in MODELS.get("fcn32s").option_names()
    with pytest.raises(ConfigError, match="model 'fcn8s' has no option 'output_stride'"):
        build_model("fcn8s", 3, 2, backbone="resnet18", output_stride=8)
    with pytest.raises(ConfigError, match="has no option 'variant'"):
        build_model("fcn8s", 3, 2, variant=32)


def test_preset_defaults_are_shown_and_stay_options():
    sig = MODELS.get("befunet_small").signature()
    assert sig.parameters["embed_dim"].default == 48
    assert sig.parameters["depths"].default == (2, 2, 2, 2)
    assert sig.parameters["decoder_channels"].default == 64
    assert MODELS.get("befunet").signature().parameters["embed_dim"].default == 96
    model = build_model(
        "befunet_small", 3, 2, embed_dim=8, num_heads=(1, 1, 2, 2), dlf_heads=(2, 2), decoder_channels=16
    )
    assert model.body.dims[0] == 8 and len(model.body.layers[2].blocks) == 2  # depths stay 2-2-2-2


def test_unknown_options_and_names_are_rejected_with_suggestions():
    with pytest.raises(ConfigError, match=r"has no option 'embed_dims' \(did you mean 'embed_dim'\?\)"):
        build_model("befunet_small", 3, 2, embed_dims=32)
    with pytest.raises(ConfigError, match="valid options: .*decoder_channels"):
        build_model("befunet_small", 3, 2, colour="blue")
    with pytest.raises(ConfigError, match="unknown model 'fcn8'. Did you mean 'fcn8s'"):
        build_model("fcn8", 3, 2)


def _positional_options(params):
    return [
        n
        for n, p in params.items()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        and n not in ("self", "in_channels", "num_classes")
    ]


@pytest.mark.parametrize("name", MODELS.names())
def test_model_options_are_keyword_only(name):
    assert _positional_options(MODELS.get(name).signature().parameters) == []


@pytest.mark.parametrize("name", LOSSES.names())
def test_loss_options_are_keyword_only(name):
    entry = LOSSES.get(name)
    assert _positional_options(entry.signature().parameters) == []
    with pytest.raises(TypeError):
        entry.builder("binary")  # the mode passed by position


def test_loss_option_passed_by_position_raises_type_error():
    from medseg.losses import BCEDiceLoss, DiceLoss, TverskyLoss, with_auxiliary

    with pytest.raises(TypeError):
        TverskyLoss(
            "binary", True, None, 1.0, False, True, None, 0.7, 0.3
        )  # alpha/beta swapped silently before
    with pytest.raises(TypeError):
        BCEDiceLoss("binary", True, None, 1.0)
    with pytest.raises(TypeError):
        with_auxiliary(DiceLoss(), 0.4)
    # keywords still work, and BCE-Dice's weights reach the right terms
    loss = BCEDiceLoss(mode="binary", bce_weight=0.25, dice_weight=2.0)
    assert loss.ce_weight == 0.25 and loss.dice_weight == 2.0


def test_signature_of_a_class_builder_has_no_self():
    assert "self" not in MODELS.get("deeplabv3plus").signature().parameters
    assert list(inspect.signature(MODELS.get("pspnet").builder).parameters)[:2] == [
        "in_channels",
        "num_classes",
    ]
