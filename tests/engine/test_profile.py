"""Profiler: FLOP counts against hand-computed values, and the measured fields on a tiny U-Net
(timings are only checked to be positive: the CPU is shared)."""

from __future__ import annotations

import pytest
import torch
from rich.console import Console
from torch import nn

from medseg.engine.profiler import count_flops, profile_model, profile_module, profile_table
from medseg.models import build_model, count_parameters


def test_conv_flops_hand_computed():
    conv = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(1, 3, 8, 8)
    # 2 FLOPs per multiply-add: 2 * C_out * H * W * C_in * k * k (bias not counted)
    assert count_flops(conv, x) == 2 * 4 * 8 * 8 * 3 * 9
    # backward of a first layer: only the weight gradient (the input needs no gradient)
    assert count_flops(conv, x, backward=True) == 2 * (2 * 4 * 8 * 8 * 3 * 9)


def test_linear_stack_flops_scale_with_batch():
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 2))
    assert count_flops(net, torch.randn(1, 3, 2, 2)) == 2 * (12 * 5 + 5 * 2)
    assert count_flops(net, torch.randn(4, 3, 2, 2)) == 4 * 2 * (12 * 5 + 5 * 2)


def test_profile_model_fields_and_model_untouched():
    res = profile_model(
        "unet", size=(32, 32), batch=2, options={"depth": 2, "base_width": 4}, steps=2, warmup=1, device="cpu"
    )
    model = build_model("unet", 3, 2, depth=2, base_width=4)
    assert res["params"] == count_parameters(model)
    assert res["gflops_per_image"] == pytest.approx(count_flops(model, torch.randn(1, 3, 32, 32)) / 1e9)
    assert res["train_gflops_per_image"] > res["gflops_per_image"]
    for key in ("train_images_per_s", "infer_images_per_s", "train_ms_per_batch", "infer_ms_per_batch"):
        assert res[key] > 0
    assert res["input_shape"] == [2, 3, 32, 32] and res["device"] == "cpu"
    assert res["infer_peak_memory_mb"] > 0 and res["train_peak_memory_mb"] > 0

    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    profile_module(model, size=(32, 32), batch=2, steps=1, warmup=0, device="cpu")
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BatchNorm statistics
    assert model.training  # the caller's mode is kept

    console = Console(record=True, width=160)
    console.print(profile_table([res]))
    text = console.export_text()
    assert "unet" in text and "GFLOPs" in text


def test_profile_rejects_bad_sizes():
    model = build_model("unet", 3, 2, depth=2, base_width=4)
    with pytest.raises(ValueError, match="divisible by 4"):
        profile_module(model, size=(30, 32), steps=1)
    with pytest.raises(ValueError, match="steps >= 1"):
        profile_module(model, size=(32, 32), steps=0)


def test_profile_runs_as_shipped_and_leaves_the_model_as_it_was():
    model = build_model("unet", 3, 2, depth=2, base_width=4)
    res = profile_module(model, size=(32, 32), batch=2, steps=1, warmup=0, device="cpu", train=False)
    assert res["memory_format"] == "channels_last" and res["fused"] is True  # UNet prefers channels_last
    assert all(p.is_contiguous() for p in model.parameters())  # caller's layout restored
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) > 0  # fused a copy, not the model
    res = profile_module(
        model,
        size=(32, 32),
        batch=2,
        steps=1,
        warmup=0,
        device="cpu",
        train=False,
        memory_format="contiguous",
        fuse=False,
    )
    assert res["memory_format"] == "contiguous" and res["fused"] is False
    bef = build_model(
        "befunet_small",
        3,
        2,
        embed_dim=24,
        depths=(1, 1, 1, 1),
        num_heads=(1, 2, 4, 8),
        window_size=4,
        lcaf_window=4,
        img_size=128,
        decoder_channels=16,
        edge_blocks=1,
        dlf_depths=(1, 1),
    )
    assert (
        profile_module(bef, size=(128, 128), batch=1, steps=1, warmup=0, device="cpu", train=False)[
            "memory_format"
        ]
        == "contiguous"
    )
