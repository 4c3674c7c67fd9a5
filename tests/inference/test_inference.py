"""Sliding-window / overlap-tile inference, test-time augmentation, slice-by-slice volumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medseg.inference import predict_proba, predict_volume
from medseg.inference.sliding_window import gaussian_importance, mirror_pad
from medseg.models import build_model
from medseg.models.base import SegmentationModel


class Pointwise(SegmentationModel):
    """1x1 convolutions only: every output pixel depends on its own input pixel, so any
    tiling must reproduce the whole-image result exactly."""

    def __init__(self, k: int = 3, multiple: int = 1) -> None:
        super().__init__()
        self.in_channels, self.num_classes, self.input_multiple = 2, k, multiple
        self.net = nn.Sequential(nn.Conv2d(2, 8, 1), nn.ReLU(), nn.Conv2d(8, k, 1))

    def forward(self, x):
        self.check_input(x)
        return self.net(x)


class Padded(SegmentationModel):
    """A padded (zero-padding) fully convolutional net that needs multiples of 4."""

    def __init__(self) -> None:
        super().__init__()
        self.in_channels, self.num_classes, self.input_multiple = 2, 3, 4
        self.net = nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 4, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Upsample(scale_factor=4),
            nn.Conv2d(4, 3, 3, padding=1),
        )

    def forward(self, x):
        self.check_input(x)
        return self.net(x)


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
@pytest.mark.parametrize("window,overlap", [((16, 16), 0.5), ((17, 9), 0.25), ((8, 32), 0.0)])
def test_sliding_window_equals_whole_image_for_pointwise_model(blend, window, overlap):
    torch.manual_seed(0)
    model = Pointwise().eval()
    x = torch.randn(2, 2, 37, 45)
    with torch.no_grad():
        ref = torch.softmax(model(x), 1)
    out = predict_proba(model, x, window=window, overlap=overlap, blend=blend, batch_size=3)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-6)


def test_single_tile_covering_the_image_equals_whole_image_forward():
    torch.manual_seed(0)
    model = Padded().eval()
    x = torch.randn(1, 2, 32, 40)
    with torch.no_grad():
        ref = torch.softmax(model(x), 1)
    out = predict_proba(model, x, window=(32, 40))
    assert torch.allclose(out, ref, atol=1e-6)
    out_big = predict_proba(model, x, window=(64, 64))  # larger than the image: clipped to it
    assert torch.allclose(out_big, ref, atol=1e-6)


def test_padding_to_the_model_multiple_and_cropping_back():
    model = Padded().eval()
    x = torch.randn(1, 2, 30, 41)
    out = predict_proba(model, x)
    assert out.shape == (1, 3, 30, 41)
    win = predict_proba(model, x, window=(16, 16), overlap=0.5)
    assert win.shape == (1, 3, 30, 41)
    assert torch.allclose(win.sum(1), torch.ones(1, 30, 41), atol=1e-5)
    with pytest.raises(ValueError, match="divisible by 4"):
        model(x)


def test_binary_model_gets_sigmoid():
    model = Pointwise(k=1).eval()
    x = torch.randn(1, 2, 9, 9)
    with torch.no_grad():
        assert torch.allclose(predict_proba(model, x), torch.sigmoid(model(x)), atol=1e-6)


def test_tta_averages_the_flipped_predictions():
    torch.manual_seed(0)
    model = Padded().eval()  # not flip-equivariant
    x = torch.randn(1, 2, 16, 20)
    with torch.no_grad():
        manual = (
            sum(
                torch.softmax(model(x.flip(d)), 1).flip(d) if d else torch.softmax(model(x), 1)
                for d in ((), (-1,), (-2,), (-2, -1))
            )
            / 4
        )
    out = predict_proba(model, x, tta=True)
    assert torch.allclose(out, manual, atol=1e-6)
    assert not torch.allclose(out, predict_proba(model, x), atol=1e-4)


def test_gaussian_importance_map():
    g = gaussian_importance((33, 17))
    assert g.shape == (33, 17) and g.max() == 1.0 and g[16, 8] == 1.0 and g.min() > 0
    assert torch.allclose(g, g.flip(0)) and torch.allclose(g, g.flip(1))
    # sigma = size / 8 along each axis
    assert torch.isclose(g[16, 8 + 2] / g[16, 8], torch.exp(torch.tensor(-0.5 * (2 / (17 / 8)) ** 2)))


@pytest.mark.parametrize("pads", [(1, 2, 3, 0), (20, 7, 0, 31)])
def test_mirror_pad_matches_numpy_reflect(pads):
    x = torch.randn(1, 2, 6, 9)
    t, b, left, r = pads
    ref = np.pad(x.numpy(), ((0, 0), (0, 0), (t, b), (left, r)), mode="reflect")
    assert np.allclose(mirror_pad(x, t, b, left, r).numpy(), ref)


def test_overlap_tile_valid_unet_independent_of_tile_size():
    torch.manual_seed(0)
    model = build_model("unet_valid", 1, 2, base_width=8, depth=3).eval()
    with torch.no_grad():
        model.head.weight.mul_(100)  # amplify logit differences so misaligned tiles would show
    x = torch.randn(2, 1, 45, 70)
    ref = predict_proba(model, x)  # a single tile covering the image
    assert ref.shape == (2, 2, 45, 70) and ref.std() > 0.05
    for window in ((8, 8), (9, 30), (20, 17), (40, 100)):
        out = predict_proba(model, x, window=window, batch_size=3)
        assert torch.allclose(out, ref, atol=1e-6), window  # misaligned tiles differ by ~2e-5


def test_overlap_tile_equals_direct_forward_on_mirror_padded_input():
    torch.manual_seed(0)
    model = build_model("unet_valid", 1, 2, base_width=4, depth=2).eval()
    x = torch.randn(1, 1, 24, 24)  # 24 + 2 * 20 = 64 is a valid input size, output 24
    m = model.output_margin
    padded = torch.from_numpy(np.pad(x.numpy(), ((0, 0), (0, 0), (m, m), (m, m)), mode="reflect"))
    with torch.no_grad():
        ref = torch.softmax(model(padded), 1)
    assert torch.allclose(predict_proba(model, x), ref, atol=1e-6)


def test_predict_volume_slice_by_slice():
    torch.manual_seed(0)
    model = Padded().eval()
    vol = torch.randn(2, 5, 12, 16)  # [C, D, H, W]
    out = predict_volume(model, vol, slice_batch=2)
    assert out.shape == (3, 5, 12, 16)
    ref = predict_proba(model, vol.movedim(1, 0))  # [D, K, H, W]
    assert torch.allclose(out, ref.movedim(0, 1), atol=1e-6)
    out_h = predict_volume(model, vol[:, :4], axis=1, slice_batch=3)  # slices along H: [C, 4, 16] images
    assert out_h.shape == (3, 4, 12, 16)


def test_accumulator_device_and_argument_errors():
    model = Pointwise().eval()
    x = torch.randn(1, 2, 10, 10)
    assert predict_proba(model, x, window=(4, 4), device="cpu").device.type == "cpu"
    with pytest.raises(ValueError, match="blend"):
        predict_proba(model, x, window=(4, 4), blend="median")
    with pytest.raises(ValueError, match="overlap"):
        predict_proba(model, x, window=(4, 4), overlap=1.0)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        predict_proba(model, x[0])
