"""Deep supervision with downsampled targets (nnU-Net): weights, target downsampling against a
numpy reference, equality with the base loss at one scale, and that it trains."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.data.synthetic import generate_dataset
from medseg.losses import build_loss
from medseg.losses.deep_supervision import DeepSupervisionLoss, deep_supervision_weights, downsample_target
from medseg.models import build_model


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7])
def test_weights_sum_to_one_halve_and_drop_the_lowest(n):
    w = deep_supervision_weights(n)
    assert sum(w) == pytest.approx(1.0)
    if n == 1:
        assert w == [1.0]
        return
    assert w[-1] == 0.0
    for a, b in zip(w[:-2], w[1:-1]):
        assert b == pytest.approx(a / 2)
    # nnU-Net's five outputs: 1, 1/2, 1/4, 1/8, 0 over 1.875
    if n == 5:
        assert w == pytest.approx([8 / 15, 4 / 15, 2 / 15, 1 / 15, 0.0])


def test_weights_are_configurable():
    assert deep_supervision_weights(3, drop_lowest=False) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    assert deep_supervision_weights(3, decay=1.0, drop_lowest=False) == pytest.approx([1 / 3] * 3)
    assert deep_supervision_weights(3, weights=[2, 1]) == pytest.approx([2 / 3, 1 / 3, 0.0])
    with pytest.raises(ValueError):
        deep_supervision_weights(2, weights=[0, 0])
    with pytest.raises(ValueError):
        deep_supervision_weights(2, decay=0.0)


def _nearest_exact_reference(t: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Source index floor((i + 0.5) * in / out), clipped, per axis."""
    h, w = t.shape[-2:]
    rows = np.minimum(np.floor((np.arange(size[0]) + 0.5) * h / size[0]).astype(int), h - 1)
    cols = np.minimum(np.floor((np.arange(size[1]) + 0.5) * w / size[1]).astype(int), w - 1)
    return t[..., rows[:, None], cols[None, :]]


@pytest.mark.parametrize("size", [(8, 12), (4, 6), (5, 7)])
def test_nearest_target_downsampling_matches_numpy(size):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=(2, 16, 24))
    labels[0, :3, :5] = 255  # ignored pixels keep their value
    out = downsample_target(torch.from_numpy(labels), size, ignore_index=255)
    assert out.dtype == torch.int64 and out.shape == (2, *size)
    np.testing.assert_array_equal(out.numpy(), _nearest_exact_reference(labels, size))
    binary = torch.from_numpy(labels[:, None] % 2).float()  # [B, 1, H, W] layout is kept
    out = downsample_target(binary, size)
    assert out.shape == (2, 1, *size)
    np.testing.assert_array_equal(out.numpy(), _nearest_exact_reference(binary.numpy(), size))


def test_max_pool_target_downsampling_honours_ignore_index():
    t = np.zeros((1, 4, 4), np.int64)
    t[0, 0, 0] = 1  # a one-pixel structure survives max-pooling
    t[0, 2:, 2:] = 255  # a fully ignored window stays ignored
    t[0, 2, 0], t[0, 3, 1] = 255, 0  # a partly ignored window takes the max of the rest
    out = downsample_target(torch.from_numpy(t), (2, 2), mode="max", ignore_index=255).numpy()
    expected = np.zeros((1, 2, 2), np.int64)
    for i in range(2):
        for j in range(2):
            win = t[0, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2]
            kept = win[win != 255]
            expected[0, i, j] = kept.max() if kept.size else 255
    np.testing.assert_array_equal(out, expected)
    assert out[0, 0, 0] == 1 and out[0, 1, 1] == 255
    with pytest.raises(ValueError, match="integer factors"):
        downsample_target(torch.from_numpy(t), (3, 3), mode="max")


@pytest.mark.parametrize("mode", ["binary", "multiclass"])
def test_single_scale_equals_the_base_loss(mode):
    torch.manual_seed(0)
    k = 1 if mode == "binary" else 3
    logits = torch.randn(2, k, 16, 16)
    target = torch.randint(0, 2 if mode == "binary" else 3, (2, 16, 16))
    target[0, :2] = 255
    base = build_loss("dice_ce", mode=mode, ignore_index=255)
    ds = build_loss("deep_supervision", mode=mode, ignore_index=255)
    assert isinstance(ds, DeepSupervisionLoss) and ds.uses_aux
    expected = base(logits, target)
    assert ds(logits, target, aux={"deep_supervision": []}).item() == pytest.approx(expected.item(), rel=1e-6)


def test_levels_are_weighted_base_losses_on_downsampled_targets():
    torch.manual_seed(1)
    logits = [torch.randn(2, 1, 16, 16), torch.randn(2, 1, 8, 8), torch.randn(2, 1, 4, 4)]
    target = torch.randint(0, 2, (2, 16, 16))
    base = build_loss("dice_ce", mode="binary", ignore_index=255)
    ds = build_loss("deep_supervision", mode="binary", ignore_index=255, base="dice_ce")
    got = ds(logits[0], target, aux={"deep_supervision": logits[1:]})
    ref = (1 / 1.5) * base(logits[0], target) + (0.5 / 1.5) * base(logits[1], target[:, 1::2, 1::2])
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)


def test_options_reach_the_base_loss_and_missing_heads_fall_back_with_a_warning():
    ds = build_loss("deep_supervision", mode="binary", base="dice_ce", ce_weight=0.0, drop_lowest=False)
    assert ds.inner.ce_weight == 0.0 and ds.drop_lowest is False
    logits, target = torch.randn(1, 1, 8, 8), torch.ones(1, 8, 8, dtype=torch.long)
    with pytest.warns(UserWarning, match="deep_supervision: true"):
        value = ds(logits, target, aux={})
    assert value.item() == pytest.approx(ds.inner(logits, target).item())


def test_a_few_steps_with_deep_supervision_reduce_the_loss():
    torch.manual_seed(0)
    images, masks, _ = generate_dataset("binary", n=4, size=32, seed=0)
    x = torch.as_tensor(np.stack(images)).permute(0, 3, 1, 2).float()
    x = (x - x.mean((2, 3), keepdim=True)) / x.std((2, 3), keepdim=True)
    y = torch.as_tensor(np.stack(masks)).long()
    model = build_model(
        "unet", 3, 1, depth=3, base_width=8, norm="instance", act="leaky_relu", deep_supervision=True
    )
    loss_fn = build_loss("deep_supervision", mode="binary", ignore_index=255)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9, nesterov=True)
    losses = []
    for _ in range(8):
        logits, aux = model.forward_aux(x)
        loss = loss_fn(logits, y, aux=aux)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]
