"""Every registered loss on 3-D logits ``[B, K, D, H, W]`` against the same plain-numpy references
as the 2-D tests (imported from them), on small random volumes with ignored voxels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_losses import (
    IGNORE,
    MODES,
    np_case,
    np_ce_pixels,
    np_counts,
    np_dice,
    np_focal,
    np_sigmoid,
    np_softmax,
    np_tversky_index,
)
from test_losses_aux_edge import np_edge_eq14
from test_losses_lovasz import np_lovasz, np_lovasz_softmax

from medseg.losses import build_loss, list_losses

SHAPE = (3, 4, 5)  # D, H, W


def volumes(mode: str, seed: int = 0, b: int = 2, c: int = 3, ignore: bool = True):
    """Logits ``[B, C, D, H, W]`` and a target with a block of ignored voxels in the first volume."""
    g = torch.Generator().manual_seed(seed)
    c = 1 if mode == "binary" else c
    logits = torch.randn(b, c, *SHAPE, generator=g) * 2
    if mode == "multiclass":
        target = torch.randint(0, c, (b, *SHAPE), generator=g)
    else:
        target = torch.randint(0, 2, (b, *SHAPE) if mode == "binary" else (b, c, *SHAPE), generator=g)
    if ignore:
        target[0, ..., 1:, :2, :3] = IGNORE
    return logits, target


def check(name: str, ref: float, logits, target, **kw) -> None:
    got = build_loss(name, ignore_index=IGNORE, **kw)(logits, target)
    assert torch.isfinite(got)
    assert got.item() == pytest.approx(ref, rel=1e-5), name


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("per_image", [False, True])
def test_region_losses_3d(mode, per_image):
    logits, target = volumes(mode, seed=1)
    p, g, v = np_case(logits, target, mode, IGNORE)
    kw = dict(mode=mode, per_image=per_image)
    check("dice", np_dice(p, g, v, 1.0, per_image), logits, target, **kw)
    tp, fp, fn = np_counts(p, g, v, per_image)
    iou = 1 - (tp + 1.0) / (tp + fp + fn + 1.0)
    check("iou", iou.mean(-1).mean() if per_image else iou.mean(), logits, target, **kw)
    tv = 1 - np_tversky_index(p, g, v, 0.2, 0.8, 1.0, per_image)
    check(
        "tversky", tv.mean(-1).mean() if per_image else tv.mean(), logits, target, alpha=0.2, beta=0.8, **kw
    )
    ti = np_tversky_index(p, g, v, 0.3, 0.7, 1.0, per_image)
    check(
        "focal_tversky",
        ((1 - ti) ** 0.75).mean(-1).mean() if per_image else ((1 - ti) ** 0.75).mean(),
        logits,
        target,
        **kw,
    )


@pytest.mark.parametrize("mode", MODES)
def test_distribution_and_compound_losses_3d(mode):
    logits, target = volumes(mode, seed=2)
    ce, v, _ = np_ce_pixels(logits, target, mode, IGNORE)
    ce_ref = (ce * v).sum() / v.sum()
    check("ce", ce_ref, logits, target, mode=mode)
    alpha = [0.2, 0.3, 0.5] if mode == "multiclass" else 0.25
    check("focal", np_focal(logits, target, mode, IGNORE, alpha, 2.0), logits, target, mode=mode, alpha=alpha)
    p, g, v = np_case(logits, target, mode, IGNORE)
    dice = np_dice(p, g, v, 1.0)
    wce = -(0.7 * g * np.log(p) + 0.3 * (1 - g) * np.log(1 - p))
    combo = 0.3 * (wce * v).sum() / v.sum() + 0.7 * dice
    check("combo", combo, logits, target, mode=mode, alpha=0.3, beta=0.7)
    if mode == "multiclass":
        check("dice_ce", ce_ref + dice, logits, target)
    else:
        check("bce_dice", ce_ref + dice, logits, target, mode=mode)
        check("bce", ce_ref, logits, target, mode=mode)


def test_weighted_ce_3d():
    logits, target = volumes("multiclass", seed=3)
    ce, v, g = np_ce_pixels(logits, target, "multiclass", IGNORE)
    w = np.array([0.5, 2.0, 1.0])
    wp = (g * w[None, :, None]).sum(1)
    check("ce", (ce * wp).sum() / wp.sum(), logits, target, weights=w.tolist())


@pytest.mark.parametrize("per_image", [False, True])
def test_lovasz_softmax_3d(per_image):
    logits, target = volumes("multiclass", seed=4, c=4)
    probs = np_softmax(logits.double().numpy()).reshape(2, 4, -1)
    ref = np_lovasz_softmax(probs, target.numpy().reshape(2, -1), "present", per_image, IGNORE)
    check("lovasz_softmax", ref, logits, target, per_image=per_image)


@pytest.mark.parametrize("per_image", [False, True])
def test_lovasz_hinge_3d(per_image):
    logits, target = volumes("binary", seed=5)
    z, t = logits.double().numpy().reshape(2, -1), target.numpy().reshape(2, -1)

    def term(zz, tt):
        keep = tt != IGNORE
        zz, tt = zz[keep], tt[keep].astype(float)
        return np_lovasz(1.0 - zz * (2 * tt - 1), tt, hinge=True)

    ref = np.mean([term(zi, ti) for zi, ti in zip(z, t)]) if per_image else term(z.ravel(), t.ravel())
    check("lovasz_hinge", ref, logits, target, mode="binary", per_image=per_image)


def test_unet_weighted_ce_3d():
    logits, target = volumes("multiclass", seed=6)
    wmap = torch.rand(2, *SHAPE, generator=torch.Generator().manual_seed(6)) * 5 + 1
    z = logits.double().numpy()
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    t = target.numpy()
    valid = t != IGNORE
    ce = -np.take_along_axis(logp, np.where(valid, t, 0)[:, None], 1)[:, 0]
    ref = (wmap.double().numpy() * ce * valid).sum() / valid.sum()
    got = build_loss("unet_weighted_ce", ignore_index=IGNORE)(logits, target, weight_map=wmap)
    assert got.item() == pytest.approx(ref, rel=1e-5)
    lb, tb = volumes("binary", seed=7, ignore=False)
    y = tb.numpy()
    pb = np_sigmoid(lb.double().numpy()[:, 0])
    ref = (wmap.double().numpy() * -(y * np.log(pb) + (1 - y) * np.log(1 - pb))).mean()
    got = build_loss("unet_weighted_ce", mode="binary")(lb, tb, weight_map=wmap)
    assert got.item() == pytest.approx(ref, rel=1e-5)


def _edge_case_3d(seed=8):
    logits, target = volumes("multiclass", seed=seed)
    g = torch.Generator().manual_seed(seed)
    edge = torch.zeros(2, *SHAPE)
    edge[:, :, 1, :] = 1.0
    edge[:, 0, 3, :2] = 0.2  # below eta: ignored
    edge[:, 2, 3, 2:] = 0.6
    stages = [torch.randn(2, 1, *SHAPE, generator=g), torch.randn(2, 1, *SHAPE, generator=g)]
    return logits, target, edge, stages


def test_befunet_edge_and_total_3d():
    logits, target, edge, stages = _edge_case_3d()
    valid = target.numpy() != IGNORE
    ref_edge = np_edge_eq14([s.double().numpy()[:, 0] for s in stages], edge.numpy(), 0.3, 1.1, valid=valid)
    got = build_loss("befunet_edge", ignore_index=IGNORE)(logits, target, aux={"edges": stages}, edge=edge)
    assert got.item() == pytest.approx(ref_edge, rel=1e-5)
    ce, v, _ = np_ce_pixels(logits, target, "multiclass", IGNORE)
    p, g, vv = np_case(logits, target, "multiclass", IGNORE)
    ref = 0.4 * (ce * v).sum() / v.sum() + 0.6 * np_dice(p, g, vv, 1.0) + 1.0 * ref_edge
    total = build_loss("befunet", ignore_index=IGNORE)(logits, target, aux={"edges": stages}, edge=edge)
    assert total.item() == pytest.approx(ref, rel=1e-5)


def test_befunet_edge_upsamples_3d_stage_maps_trilinearly():
    logits, target, edge, _ = _edge_case_3d(9)
    small = torch.randn(2, 1, 2, 2, 3)
    up = torch.nn.functional.interpolate(small, size=SHAPE, mode="trilinear", align_corners=False)
    loss = build_loss("befunet_edge", ignore_index=IGNORE)
    a = loss(logits, target, aux={"edges": [small]}, edge=edge)
    b = loss(logits, target, aux={"edges": [up]}, edge=edge)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


def _nearest_exact_np(t: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """Nearest-exact downsampling of ``[B, *S]`` by hand: source index floor((i + 0.5) * in / out)."""
    idx = [np.floor((np.arange(o) + 0.5) * i / o).astype(int) for i, o in zip(t.shape[1:], size)]
    return t[:, idx[0][:, None, None], idx[1][None, :, None], idx[2][None, None, :]]


def test_deep_supervision_3d_is_the_weighted_sum_of_dice_on_downsampled_targets():
    g = torch.Generator().manual_seed(5)
    full = torch.randn(2, 3, 4, 6, 8, generator=g)
    half = torch.randn(2, 3, 2, 3, 4, generator=g)
    target = torch.randint(0, 3, (2, 4, 6, 8), generator=g)
    target[0, 1:, :2, :3] = IGNORE
    loss = build_loss(
        "deep_supervision", mode="multiclass", ignore_index=IGNORE, base="dice", drop_lowest=False
    )
    got = loss(full, target, aux={"deep_supervision": [half]})
    small = torch.from_numpy(_nearest_exact_np(target.numpy(), (2, 3, 4)))
    ref = [np_dice(*np_case(z, t, "multiclass", IGNORE), 1.0) for z, t in ((full, target), (half, small))]
    w = np.array([1.0, 0.5]) / 1.5  # weights halve per level, normalised to sum 1
    assert got.item() == pytest.approx(float(w @ np.array(ref)), rel=1e-5)


COVERED_3D = {
    "dice",
    "iou",
    "tversky",
    "focal_tversky",
    "ce",
    "focal",
    "combo",
    "dice_ce",
    "bce_dice",
    "lovasz_softmax",
    "lovasz_hinge",
    "unet_weighted_ce",
    "befunet_edge",
    "befunet",
    "deep_supervision",
}


def test_every_registered_loss_has_a_3d_reference_test():
    assert set(list_losses()) <= COVERED_3D, sorted(set(list_losses()) - COVERED_3D)


@pytest.mark.parametrize(
    "name", sorted(COVERED_3D - {"befunet_edge", "befunet", "unet_weighted_ce", "deep_supervision"})
)
def test_3d_gradients_are_finite_and_skip_ignored_voxels(name):
    mode = "binary" if name in ("lovasz_hinge", "bce_dice") else "multiclass"
    logits, target = volumes(mode, seed=10)
    x = logits.double().requires_grad_(True)
    build_loss(name, mode=mode, ignore_index=IGNORE)(x, target).backward()
    assert torch.isfinite(x.grad).all()
    ignored = (target == IGNORE).unsqueeze(1)  # [B, 1, D, H, W] in both modes
    assert (x.grad.abs().sum(1, keepdim=True)[ignored] == 0).all()  # ignored voxels get no gradient
