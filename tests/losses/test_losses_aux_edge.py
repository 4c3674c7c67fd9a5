"""U-Net weighted CE, BEFUnet edge loss (eq. 14) and the auxiliary / deep-supervision wrappers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medseg.errors import ConfigError
from medseg.losses import DeepSupervision, build_loss, with_auxiliary

IGNORE = 255


def test_unet_weighted_ce_matches_reference():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, generator=g)
    target = torch.randint(0, 3, (2, 4, 5), generator=g)
    target[0, 0] = IGNORE
    wmap = torch.rand(2, 4, 5, generator=g) * 5 + 1
    z = logits.double().numpy()
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    t = target.numpy()
    valid = t != IGNORE
    ce = -np.take_along_axis(logp, np.where(valid, t, 0)[:, None], 1)[:, 0]
    ref = (wmap.double().numpy() * ce * valid).sum() / valid.sum()
    loss = build_loss("unet_weighted_ce", ignore_index=IGNORE)
    assert loss(logits, target, weight_map=wmap).item() == pytest.approx(ref, rel=1e-5)
    # binary
    lb = torch.randn(2, 1, 4, 5, generator=g)
    tb = torch.randint(0, 2, (2, 4, 5), generator=g)
    p = 1 / (1 + np.exp(-lb.double().numpy()[:, 0]))
    y = tb.numpy()
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    ref = (wmap.double().numpy() * bce).mean()
    assert build_loss("unet_weighted_ce", mode="binary")(lb, tb, weight_map=wmap).item() == pytest.approx(
        ref, rel=1e-5
    )
    x = logits.double().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: loss(v, target, weight_map=wmap.double()), (x,))
    with pytest.raises(ConfigError, match="weight_map"):
        loss(logits, target)
    with pytest.raises(ValueError, match="weight_map must be"):
        loss(logits, target, weight_map=wmap[:, :2])


def np_edge_eq14(stage_logits, edge, eta, lam, valid=None):
    """BEFUnet eq. 14 transcribed: pixel i, stage j; sums over pixels divided by counted pixels."""
    e = edge
    ok = np.ones_like(e, bool) if valid is None else valid
    n_pos = ((e >= eta) & ok).sum()
    n_neg = ((e == 0) & ok).sum()
    beta = n_neg / (n_pos + n_neg)
    alpha = lam * (1 - beta)
    total = 0.0
    for z in stage_logits:
        y = 1 / (1 + np.exp(-z))
        loss = np.zeros_like(y)
        neg = (e == 0) & ok
        pos = (e >= eta) & ok
        loss[neg] = -alpha * np.log(1 - y[neg])
        loss[pos] = -beta * np.log(y[pos])  # 0 < e < eta and ignored pixels stay 0
        total += loss.sum() / (n_pos + n_neg)
    return total


def edge_case(seed=1):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 3, 8, 8, generator=g)
    target = torch.randint(0, 3, (2, 8, 8), generator=g)
    edge = torch.zeros(2, 8, 8)
    edge[:, 2, :] = 1.0
    edge[:, 5, :4] = 0.2  # annotator agreement below eta: ignored
    edge[:, 5, 4:] = 0.6  # above eta: positive
    stages = [torch.randn(2, 1, 8, 8, generator=g), torch.randn(2, 1, 8, 8, generator=g)]
    return logits, target, edge, stages


def test_befunet_edge_matches_eq14():
    logits, target, edge, stages = edge_case()
    target[0, 0] = IGNORE
    ref = np_edge_eq14(
        [s.double().numpy()[:, 0] for s in stages], edge.numpy(), 0.3, 1.1, valid=target.numpy() != IGNORE
    )
    loss = build_loss("befunet_edge", ignore_index=IGNORE)
    got = loss(logits, target, aux={"edges": stages}, edge=edge)
    assert got.item() == pytest.approx(ref, rel=1e-5)
    ref2 = np_edge_eq14(
        [s.double().numpy()[:, 0] for s in stages], edge.numpy(), 0.5, 2.0, valid=target.numpy() != IGNORE
    )
    got2 = build_loss("befunet_edge", ignore_index=IGNORE, eta=0.5, lam=2.0)(
        logits, target, aux={"edges": stages}, edge=edge
    )
    assert got2.item() == pytest.approx(ref2, rel=1e-5)


def test_befunet_edge_upsamples_stage_maps_bilinearly():
    logits, target, edge, _ = edge_case()
    small = torch.randn(2, 1, 4, 4)
    up = F.interpolate(small, size=(8, 8), mode="bilinear", align_corners=False)
    loss = build_loss("befunet_edge")
    a = loss(logits, target, aux={"edges": [small]}, edge=edge)
    b = loss(logits, target, aux={"edges": [up]}, edge=edge)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)
    x = small.double().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda s: loss(logits.double(), target, aux={"edges": [s]}, edge=edge), (x,)
    )


def test_befunet_total_is_weighted_sum():
    logits, target, edge, stages = edge_case(2)
    aux = {"edges": stages}
    ce = build_loss("ce")(logits, target)
    dice = build_loss("dice")(logits, target)
    edge_term = build_loss("befunet_edge")(logits, target, aux=aux, edge=edge)
    total = build_loss("befunet")(logits, target, aux=aux, edge=edge)
    assert total.item() == pytest.approx((0.4 * ce + 0.6 * dice + 1.0 * edge_term).item(), rel=1e-6)
    custom = build_loss("befunet", lambda1=1.0, lambda2=0.5, gamma=0.1)(logits, target, aux=aux, edge=edge)
    assert custom.item() == pytest.approx((ce + 0.5 * dice + 0.1 * edge_term).item(), rel=1e-6)
    with pytest.raises(ConfigError, match="aux\\['edges'\\]"):
        build_loss("befunet")(logits, target, aux={}, edge=edge)
    with pytest.raises(ConfigError, match="batch\\['edge'\\]"):
        build_loss("befunet")(logits, target, aux=aux)


def test_weighted_sum_routes_aux_and_extras():
    logits, target, edge, stages = edge_case(3)
    wmap = torch.ones(2, 8, 8) * 2
    spec = build_loss("dice_ce:1+befunet_edge:0.5+unet_weighted_ce:0.25")
    assert spec.uses_aux and set(spec.needs) == {"edge", "weight_map"}
    got = spec(logits, target, aux={"edges": stages}, edge=edge, weight_map=wmap)
    ref = (
        build_loss("dice_ce")(logits, target)
        + 0.5 * build_loss("befunet_edge")(logits, target, aux={"edges": stages}, edge=edge)
        + 0.25 * build_loss("unet_weighted_ce")(logits, target, weight_map=wmap)
    )
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)


def test_auxiliary_head_and_deep_supervision():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 3, 8, 8, generator=g)
    target = torch.randint(0, 3, (2, 8, 8), generator=g)
    aux_logits = torch.randn(2, 3, 4, 4, generator=g)
    base = build_loss("dice_ce")
    up = F.interpolate(aux_logits, size=(8, 8), mode="bilinear", align_corners=False)
    wrapped = with_auxiliary(base)
    assert wrapped.uses_aux
    got = wrapped(logits, target, aux={"aux": aux_logits})
    assert got.item() == pytest.approx((base(logits, target) + 0.4 * base(up, target)).item(), rel=1e-6)
    built = build_loss("dice_ce", aux_weight=0.4)
    assert built.uses_aux and built(logits, target, aux={"aux": aux_logits}).item() == pytest.approx(
        got.item()
    )

    deep = [torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 2, 2, generator=g)]
    ds = DeepSupervision(base)
    assert ds.uses_aux
    levels = [logits] + [F.interpolate(d, size=(8, 8), mode="bilinear", align_corners=False) for d in deep]
    weights = np.array([1.0, 0.5, 0.25]) / 1.75
    ref = sum(w * base(lv, target) for w, lv in zip(weights, levels))
    assert ds(logits, target, aux={"deep": deep}).item() == pytest.approx(ref.item(), rel=1e-6)
    assert build_loss("dice_ce", deep_supervision=True)(
        logits, target, aux={"deep": deep}
    ).item() == pytest.approx(ref.item(), rel=1e-6)
    with pytest.raises(ConfigError, match="aux\\['aux'\\]"):
        wrapped(logits, target, aux={"deep": deep})
    with pytest.raises(ConfigError, match="aux\\['deep'\\]"):
        ds(logits, target, aux=None)
