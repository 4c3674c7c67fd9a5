"""Region, distribution and compound losses against plain-numpy references written from the papers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.constants import IGNORE_INDEX
from medseg.errors import ConfigError
from medseg.losses import LOSSES, build_loss, list_losses

IGNORE = IGNORE_INDEX  # the value the pipeline writes outside a region of interest


# ----------------------------------------------------------------------------- numpy references
def np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def np_sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def np_case(logits: torch.Tensor, target: torch.Tensor, mode: str, ignore=None):
    """Probabilities p, 0/1 ground truth g, validity v, all as float64 [B, C, N]."""
    z = logits.detach().double().numpy().reshape(logits.shape[0], logits.shape[1], -1)
    t = target.numpy()
    b, c = z.shape[:2]
    if mode == "multiclass":
        p = np_softmax(z)
        t = t.reshape(b, -1)
        v = np.ones_like(t, dtype=float) if ignore is None else (t != ignore).astype(float)
        g = np.stack([(t == k) for k in range(c)], 1).astype(float) * v[:, None]
        v = np.repeat(v[:, None], c, 1)
    else:
        p = np_sigmoid(z)
        t = t.reshape(b, c, -1).astype(float)
        v = np.ones_like(t) if ignore is None else (t != ignore).astype(float)
        g = np.where(v > 0, t, 0.0)
    return p, g, v


def np_counts(p, g, v, per_image):
    axes = (2,) if per_image else (0, 2)
    tp = (p * g * v).sum(axes)
    fp = (p * (1 - g) * v).sum(axes)
    fn = ((1 - p) * g * v).sum(axes)
    return tp, fp, fn


def np_reduce(per_class, per_image, weights=None):
    if weights is None:
        return per_class.mean(-1).mean() if per_image else per_class.mean()
    w = np.asarray(weights, float)
    r = (per_class * w).sum(-1) / w.sum()
    return r.mean() if per_image else r


def np_dice(p, g, v, smooth=1.0, per_image=False, weights=None, squared=False):
    tp, fp, fn = np_counts(p, g, v, per_image)
    axes = (2,) if per_image else (0, 2)
    if squared:
        den = (p * p * v).sum(axes) + (g * g * v).sum(axes)
    else:
        den = (tp + fp) + (tp + fn)
    return np_reduce(1 - (2 * tp + smooth) / (den + smooth), per_image, weights)


def np_tversky_index(p, g, v, alpha, beta, smooth, per_image=False):
    tp, fp, fn = np_counts(p, g, v, per_image)
    return (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)


def logits_and_target(mode, b=2, c=3, h=6, w=7, seed=0, ignore=True):
    g = torch.Generator().manual_seed(seed)
    if mode == "binary":
        c = 1
    logits = torch.randn(b, c, h, w, generator=g) * 2
    if mode == "multiclass":
        target = torch.randint(0, c, (b, h, w), generator=g)
        if ignore:
            target[0, :2, :3] = IGNORE
    else:
        shape = (b, h, w) if mode == "binary" else (b, c, h, w)
        target = torch.randint(0, 2, shape, generator=g)
        if ignore:
            target[0, ..., :2, :3] = IGNORE
    return logits, target


MODES = ["binary", "multiclass", "multilabel"]


# ----------------------------------------------------------------------------- region losses
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("per_image", [False, True])
def test_dice_matches_reference(mode, per_image):
    logits, target = logits_and_target(mode)
    p, g, v = np_case(logits, target, mode, IGNORE)
    got = build_loss("dice", mode=mode, ignore_index=IGNORE, per_image=per_image)(logits, target)
    assert got.item() == pytest.approx(np_dice(p, g, v, 1.0, per_image), rel=1e-5)


def test_dice_options_match_reference():
    logits, target = logits_and_target("multiclass")
    p, g, v = np_case(logits, target, "multiclass", IGNORE)
    kw = dict(mode="multiclass", ignore_index=IGNORE)
    got = build_loss("dice", squared=True, smooth=0.5, **kw)(logits, target).item()
    assert got == pytest.approx(np_dice(p, g, v, 0.5, squared=True), rel=1e-5)
    got = build_loss("dice", weights=[0.2, 1.0, 3.0], **kw)(logits, target).item()
    assert got == pytest.approx(np_dice(p, g, v, 1.0, weights=[0.2, 1.0, 3.0]), rel=1e-5)
    got = build_loss("dice", include_background=False, **kw)(logits, target).item()
    assert got == pytest.approx(np_dice(p[:, 1:], g[:, 1:], v[:, 1:], 1.0), rel=1e-5)


def test_dice_hand_worked_case():
    # 1D image, p = [1, 1, 0, 0] (given as probabilities), g = [1, 0, 1, 0]: TP = 1, Σp = 2, Σg = 2
    probs = torch.tensor([[[1.0, 1.0, 0.0, 0.0]]])
    target = torch.tensor([[1, 0, 1, 0]])
    loss = build_loss("dice", mode="binary", from_logits=False, smooth=0.0)(probs, target)
    assert loss.item() == pytest.approx(1 - 2 * 1 / 4)  # one factor 2
    iou = build_loss("iou", mode="binary", from_logits=False, smooth=0.0)(probs, target)
    assert iou.item() == pytest.approx(1 - 1 / 3)


@pytest.mark.parametrize("mode", MODES)
def test_iou_matches_reference(mode):
    logits, target = logits_and_target(mode, seed=1)
    p, g, v = np_case(logits, target, mode, IGNORE)
    tp, fp, fn = np_counts(p, g, v, False)
    ref = np.mean(1 - (tp + 1.0) / (tp + fp + fn + 1.0))
    got = build_loss("jaccard", mode=mode, ignore_index=IGNORE)(logits, target)
    assert got.item() == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_tversky_matches_reference_and_alpha_weights_false_positives(mode):
    logits, target = logits_and_target(mode, seed=2)
    p, g, v = np_case(logits, target, mode, IGNORE)
    ref = np.mean(1 - np_tversky_index(p, g, v, 0.2, 0.8, 1.0))
    got = build_loss("tversky", mode=mode, ignore_index=IGNORE, alpha=0.2, beta=0.8)(logits, target)
    assert got.item() == pytest.approx(ref, rel=1e-5)
    # a prediction with only false positives is punished by alpha, not beta
    probs = torch.tensor([[[1.0, 1.0, 1.0, 0.0]]])
    tgt = torch.tensor([[1, 0, 0, 0]])
    fp_heavy = build_loss("tversky", mode="binary", from_logits=False, smooth=0.0, alpha=0.9, beta=0.1)
    fn_heavy = build_loss("tversky", mode="binary", from_logits=False, smooth=0.0, alpha=0.1, beta=0.9)
    assert fp_heavy(probs, tgt).item() == pytest.approx(1 - 1 / (1 + 0.9 * 2))
    assert fn_heavy(probs, tgt).item() == pytest.approx(1 - 1 / (1 + 0.1 * 2))


@pytest.mark.parametrize("mode", MODES)
def test_tversky_identities(mode):
    logits, target = logits_and_target(mode, seed=3)
    kw = dict(mode=mode, ignore_index=IGNORE, smooth=0.0)
    dice = build_loss("dice", **kw)(logits, target)
    iou = build_loss("iou", **kw)(logits, target)
    t_half = build_loss("tversky", alpha=0.5, beta=0.5, **kw)(logits, target)
    t_one = build_loss("tversky", alpha=1.0, beta=1.0, **kw)(logits, target)
    assert t_half.item() == pytest.approx(dice.item(), rel=1e-6)
    assert t_one.item() == pytest.approx(iou.item(), rel=1e-6)


@pytest.mark.parametrize("per_image", [False, True])
def test_focal_tversky_applies_exponent_per_class(per_image):
    logits, target = logits_and_target("multiclass", seed=4)
    p, g, v = np_case(logits, target, "multiclass", IGNORE)
    ti = np_tversky_index(p, g, v, 0.3, 0.7, 1.0, per_image)
    ref = ((1 - ti) ** 0.75).mean(-1).mean()
    loss = build_loss("focal_tversky", mode="multiclass", ignore_index=IGNORE, per_image=per_image)
    assert loss(logits, target).item() == pytest.approx(ref, rel=1e-5)
    wrong = np.mean(1 - ti) ** 0.75  # mean(loss)**γ, the blog-code form
    assert abs(ref - wrong) > 1e-4


@pytest.mark.parametrize("name", ["dice", "iou", "tversky"])
@pytest.mark.parametrize("mode", MODES)
def test_perfect_prediction_gives_zero(name, mode):
    _, target = logits_and_target(mode, seed=5, ignore=False)
    if mode == "multiclass":
        probs = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float()
    elif mode == "binary":
        probs = target.unsqueeze(1).float()
    else:
        probs = target.float()
    loss = build_loss(name, mode=mode, from_logits=False)(probs, target)
    assert loss.item() == pytest.approx(0.0, abs=1e-7)


def test_region_losses_decrease_as_prediction_improves():
    _, target = logits_and_target("multiclass", seed=6, ignore=False)
    onehot = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float()
    for name in ["dice", "iou", "tversky", "focal_tversky", "combo", "focal", "ce", "dice_ce"]:
        loss = build_loss(name)
        values = [loss(s * (2 * onehot - 1), target).item() for s in (0.0, 0.5, 1.0, 3.0)]
        assert all(a > b for a, b in zip(values, values[1:])), (name, values)


# ----------------------------------------------------------------------------- distribution losses
def np_ce_pixels(logits, target, mode, ignore):
    p, g, v = np_case(logits, target, mode, ignore)
    if mode == "multiclass":
        ce = -(g * np.log(p)).sum(1)  # [B, N], 0 at ignored pixels
        return ce, v[:, 0], g
    ce = -(g * np.log(p) + (1 - g) * np.log(1 - p))
    return ce, v, g


@pytest.mark.parametrize("mode", MODES)
def test_ce_matches_reference(mode):
    logits, target = logits_and_target(mode, seed=7)
    ce, v, _ = np_ce_pixels(logits, target, mode, IGNORE)
    got = build_loss("ce", mode=mode, ignore_index=IGNORE)(logits, target)
    assert got.item() == pytest.approx((ce * v).sum() / v.sum(), rel=1e-5)


def test_weighted_ce_matches_reference():
    logits, target = logits_and_target("multiclass", seed=8)
    ce, v, g = np_ce_pixels(logits, target, "multiclass", IGNORE)
    w = np.array([0.5, 2.0, 1.0])
    wp = (g * w[None, :, None]).sum(1)
    got = build_loss("ce", ignore_index=IGNORE, weights=w.tolist())(logits, target)
    assert got.item() == pytest.approx((ce * wp).sum() / wp.sum(), rel=1e-5)
    ref = torch.nn.functional.cross_entropy(
        logits, target, weight=torch.tensor(w, dtype=torch.float32), ignore_index=IGNORE
    )
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)


def np_focal(logits, target, mode, ignore, alpha, gamma):
    p, g, v = np_case(logits, target, mode, ignore)
    if mode == "multiclass":
        pt = (p * g).sum(1)
        vv = v[:, 0]
        at = np.ones_like(pt) if alpha is None else (g * np.asarray(alpha)[None, :, None]).sum(1)
    else:
        pt = np.where(g > 0, p, 1 - p)
        vv = v
        at = np.ones_like(pt) if alpha is None else np.where(g > 0, alpha, 1 - alpha)
    fl = -at * (1 - pt) ** gamma * np.log(np.where(vv > 0, pt, 1.0))
    return (fl * vv).sum() / vv.sum()


@pytest.mark.parametrize(
    "mode,alpha",
    [
        ("binary", 0.25),
        ("binary", None),
        ("multilabel", 0.7),
        ("multiclass", [0.2, 0.3, 0.5]),
        ("multiclass", None),
    ],
)
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_matches_reference(mode, alpha, gamma):
    logits, target = logits_and_target(mode, seed=9)
    ref = np_focal(logits, target, mode, IGNORE, alpha, gamma)
    got = build_loss("focal", mode=mode, ignore_index=IGNORE, alpha=alpha, gamma=gamma)(logits, target)
    assert got.item() == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_focal_gamma_zero_is_cross_entropy(mode):
    logits, target = logits_and_target(mode, seed=10)
    ce = build_loss("ce", mode=mode, ignore_index=IGNORE)(logits, target)
    fl = build_loss("focal", mode=mode, ignore_index=IGNORE, gamma=0.0)(logits, target)
    assert fl.item() == pytest.approx(ce.item(), rel=1e-6)
    # per-pixel modulation: focal < CE for gamma > 0, and not equal to (1 - exp(-CE))^γ · CE
    fl2 = build_loss("focal", mode=mode, ignore_index=IGNORE, gamma=2.0)(logits, target).item()
    blog = (1 - np.exp(-ce.item())) ** 2 * ce.item()
    assert fl2 < ce.item() and abs(fl2 - blog) > 1e-4


def test_combo_matches_reference_and_falls_with_better_prediction():
    for mode in MODES:
        logits, target = logits_and_target(mode, seed=11)
        p, g, v = np_case(logits, target, mode, IGNORE)
        a, b = 0.3, 0.7
        wce = -(b * g * np.log(p) + (1 - b) * (1 - g) * np.log(1 - p))
        wce = (wce * v).sum() / v.sum()
        ref = a * wce + (1 - a) * np_dice(p, g, v, 1.0)
        got = build_loss("combo", mode=mode, ignore_index=IGNORE, alpha=a, beta=b)(logits, target)
        assert got.item() == pytest.approx(ref, rel=1e-5), mode
    target = torch.tensor([[[1, 0, 1, 1]]])
    good = build_loss("combo", mode="binary")(torch.tensor([[[[4.0, -4.0, 4.0, 4.0]]]]), target)
    bad = build_loss("combo", mode="binary")(torch.tensor([[[[-4.0, 4.0, -4.0, -4.0]]]]), target)
    assert 0 <= good.item() < bad.item()


def test_compound_losses_are_sums_of_parts():
    logits, target = logits_and_target("multiclass", seed=12)
    kw = dict(mode="multiclass", ignore_index=IGNORE)
    ce = build_loss("ce", **kw)(logits, target)
    dice = build_loss("dice", **kw)(logits, target)
    focal = build_loss("focal", **kw)(logits, target)
    assert build_loss("dice_ce", **kw)(logits, target).item() == pytest.approx((ce + dice).item(), rel=1e-6)
    got = build_loss("dice_ce", ce_weight=0.4, dice_weight=0.6, **kw)(logits, target)
    assert got.item() == pytest.approx((0.4 * ce + 0.6 * dice).item(), rel=1e-6)
    got = build_loss(" dice:1 + focal:0.5 ", **kw)(logits, target)
    assert got.item() == pytest.approx((dice + 0.5 * focal).item(), rel=1e-6)
    lb, tb = logits_and_target("binary", seed=12)
    kb = dict(mode="binary", ignore_index=IGNORE)
    ref = build_loss("bce", **kb)(lb, tb) + build_loss("dice", **kb)(lb, tb)
    assert build_loss("bce_dice", **kb)(lb, tb).item() == pytest.approx(ref.item(), rel=1e-6)


# ----------------------------------------------------------------------------- robustness
ALL_PLAIN = [
    "ce",
    "dice",
    "dice_ce",
    "bce_dice",
    "iou",
    "focal",
    "tversky",
    "focal_tversky",
    "combo",
    "lovasz_softmax",
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ALL_PLAIN + ["lovasz_hinge"])
def test_all_ignored_and_empty_masks(name, mode):
    if name == "lovasz_hinge" and mode == "multiclass":
        pytest.skip("binary loss")
    logits, target = logits_and_target(mode, seed=13)
    logits.requires_grad_(True)
    for smooth in (
        [{}] if name in ("ce", "focal", "lovasz_softmax", "lovasz_hinge") else [{}, {"smooth": 0.0}]
    ):
        loss = build_loss(name, mode=mode, ignore_index=IGNORE, **smooth)
        value = loss(logits, torch.full_like(target, IGNORE))
        assert value.item() == 0.0 and value.requires_grad
        value.backward()
        assert torch.isfinite(logits.grad).all()
        empty = loss(logits, torch.zeros_like(target))
        assert torch.isfinite(empty)
        empty.backward()
        assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize(
    "name", ["dice", "iou", "tversky", "focal_tversky", "ce", "focal", "combo", "lovasz_softmax", "dice_ce"]
)
def test_ignored_pixels_count_nowhere(name):
    """Loss with an ignored strip equals the loss on the image cropped to the valid part."""
    logits, target = logits_and_target("multiclass", seed=14, ignore=False)
    target[:, :, :2] = IGNORE
    junk = logits.clone()
    junk[:, :, :, :2] = 100.0  # would dominate any sum that still saw the ignored pixels
    loss = build_loss(name, mode="multiclass", ignore_index=IGNORE)
    crop = loss(logits[..., 2:], target[..., 2:])
    assert loss(junk, target).item() == pytest.approx(crop.item(), rel=1e-5, abs=1e-7)


def test_binary_target_without_channel_and_255_ignore():
    logits, target = logits_and_target("binary", seed=15)
    assert target.shape == (2, 6, 7) and (target == IGNORE).any()
    for name in ["bce", "dice", "bce_dice", "focal", "iou", "tversky", "lovasz_hinge", "combo"]:
        a = build_loss(name, mode="binary", ignore_index=IGNORE)(logits, target)
        b = build_loss(name, mode="binary", ignore_index=IGNORE)(logits, target.unsqueeze(1))
        assert torch.isfinite(a) and a.item() == pytest.approx(b.item())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", ALL_PLAIN)
def test_autocast_computes_in_float32(name, dtype):
    logits, target = logits_and_target("multiclass", seed=16)
    ref = build_loss(name, ignore_index=IGNORE)(logits.to(dtype).float(), target)
    with torch.autocast("cpu", dtype=dtype):
        got = build_loss(name, ignore_index=IGNORE)(logits.to(dtype), target)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize(
    "name", ["dice", "iou", "tversky", "focal_tversky", "ce", "focal", "combo", "dice_ce"]
)
@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_float64(name, mode):
    logits, target = logits_and_target(mode, b=2, c=3, h=3, w=4, seed=17)
    x = logits.double().requires_grad_(True)
    loss = build_loss(name, mode=mode, ignore_index=IGNORE)
    assert torch.autograd.gradcheck(lambda z: loss(z, target), (x,), eps=1e-6, atol=1e-6)
    if name in ("dice", "iou", "tversky", "focal_tversky"):
        for kw in ({"per_image": True}, {"squared": True} if name == "dice" else {"weights": [1, 2, 3]}):
            if mode != "multiclass" and "weights" in kw:
                kw = {"weights": [2.0] * logits.shape[1]}
            other = build_loss(name, mode=mode, ignore_index=IGNORE, **kw)
            assert torch.autograd.gradcheck(lambda z, f=other: f(z, target), (x,), eps=1e-6, atol=1e-6)
        plain = build_loss(name, mode=mode)  # no ignore_index: the other code path
        clean = target.masked_fill(target == IGNORE, 0)
        assert torch.autograd.gradcheck(lambda z: plain(z, clean), (x,), eps=1e-6, atol=1e-6)


def test_clear_errors():
    logits, target = logits_and_target("multiclass", seed=18, ignore=False)
    dice = build_loss("dice")
    with pytest.raises(ValueError, match="outside"):
        dice(logits, torch.full_like(target, 3))
    with pytest.raises(ValueError, match="outside"):
        dice(logits, torch.full_like(target, -1))
    with pytest.raises(TypeError, match="integer class indices"):
        dice(logits, target.float())
    with pytest.raises(ValueError, match="target must be"):
        dice(logits, target[:, :-1])
    with pytest.raises(TypeError, match="floating-point"):
        dice(target.unsqueeze(1), target)
    with pytest.raises(ValueError, match="binary mode expects"):
        build_loss("dice", mode="binary")(logits, target)
    with pytest.raises(ValueError, match="multiclass mode expects"):
        dice(logits[:, :1], target)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        build_loss("bce", mode="binary")(logits[:, :1], target * 2)
    with pytest.raises(ValueError, match="mode"):
        build_loss("dice", mode="multi")


def test_build_loss_spec_and_registry():
    names = list_losses()
    for n in [
        "dice",
        "bce_dice",
        "dice_ce",
        "iou",
        "focal",
        "tversky",
        "focal_tversky",
        "lovasz_hinge",
        "lovasz_softmax",
        "combo",
        "unet_weighted_ce",
        "befunet_edge",
        "ce",
        "befunet",
    ]:
        assert n in names
    assert "bce" in LOSSES and "jaccard" in LOSSES
    with pytest.raises(ConfigError, match="Did you mean 'dice'"):
        build_loss("dise")
    with pytest.raises(ConfigError, match="not a number"):
        build_loss("dice:x")
    with pytest.raises(ConfigError, match="empty term"):
        build_loss("dice++focal")
    with pytest.raises(ConfigError, match="no option 'foo'"):
        build_loss("dice:1+focal:0.5", foo=1)
    with pytest.raises(ConfigError, match="no option"):
        build_loss("dice", gamma=2.0)
    # options go only to the components that accept them; qualified keys to one component
    s = build_loss(
        "dice:1+focal:0.5", gamma=1.0, smooth=0.5, ignore_index=IGNORE, **{"focal.alpha": [1, 1, 2]}
    )
    dice, focal = s.terms
    assert focal.gamma == 1.0 and dice.smooth == 0.5 and focal.alpha == [1.0, 1.0, 2.0]
    assert dice.ignore_index == focal.ignore_index == IGNORE
    assert s.needs == () and s.uses_aux is False
    logits, target = logits_and_target("multiclass", seed=19)
    s(logits, target)
    assert set(s.last_terms) == {"dice", "focal"}
    for name in names:
        loss = build_loss(name, mode="binary" if name == "lovasz_hinge" else "multiclass")
        assert isinstance(loss.needs, tuple) and isinstance(loss.uses_aux, bool)
    assert build_loss("unet_weighted_ce").needs == ("weight_map",)
    edge = build_loss("befunet_edge")
    assert edge.needs == ("edge",) and edge.uses_aux
    mixed = build_loss("dice_ce:1+befunet_edge:0.1+unet_weighted_ce:1")
    assert set(mixed.needs) == {"edge", "weight_map"} and mixed.uses_aux


def test_label_checks_with_ignored_pixels_present():
    logits, target = logits_and_target("multiclass", seed=20)  # holds 255 = ignore_index
    for bad in (3, 7, -1, 300):
        t = target.clone()
        t[1, 0, 0] = bad
        with pytest.raises(ValueError, match=f"label {bad}"):
            build_loss("dice_ce", ignore_index=IGNORE)(logits, t)
    lb, tb = logits_and_target("binary", seed=20)
    tb[1, 0, 0] = 2
    with pytest.raises(ValueError, match="found 2"):
        build_loss("bce", mode="binary", ignore_index=IGNORE)(lb, tb)


@pytest.mark.parametrize("name", ["dice", "iou", "ce", "focal", "lovasz_softmax", "combo"])
def test_ignore_index_inside_class_range(name):
    """ignore_index may be a class id (here 0): those pixels vanish from every sum."""
    logits, target = logits_and_target("multiclass", seed=21, ignore=False)
    target[:, :, :2] = 0
    target[:, :, 2:] = target[:, :, 2:].clamp_min(1)
    loss = build_loss(name, ignore_index=0)
    junk = logits.clone()
    junk[:, :, :, :2] = 50.0
    crop = build_loss(name)(logits[..., 2:], target[..., 2:])
    if name in ("dice", "iou", "combo"):  # class 0 still has a (now empty) Dice term on both sides
        crop = loss(logits[..., 2:], target[..., 2:])
    assert loss(junk, target).item() == pytest.approx(crop.item(), rel=1e-5)


def test_bool_and_soft_binary_targets():
    logits, target = logits_and_target("binary", seed=22, ignore=False)
    as_bool = build_loss("bce_dice", mode="binary")(logits, target.bool())
    as_int = build_loss("bce_dice", mode="binary")(logits, target)
    assert as_bool.item() == pytest.approx(as_int.item())
    soft = target.float() * 0.8 + 0.1
    soft[0, 0] = IGNORE
    p = torch.sigmoid(logits[:, 0]).double()
    keep = soft != IGNORE
    y = soft.double()
    ref = -(y * p.log() + (1 - y) * (1 - p).log())[keep].mean()
    got = build_loss("bce", mode="binary", ignore_index=IGNORE)(logits, soft)
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)


@pytest.mark.parametrize(
    "mode,alpha", [("binary", 0.25), ("multilabel", None), ("multiclass", [0.2, 0.3, 0.5])]
)
@pytest.mark.parametrize("gamma", [0.0, 0.5, 3.0])
def test_focal_hand_written_gradient(mode, alpha, gamma):
    logits, target = logits_and_target(mode, b=2, c=3, h=3, w=4, seed=23)
    x = logits.double().requires_grad_(True)
    loss = build_loss("focal", mode=mode, ignore_index=IGNORE, alpha=alpha, gamma=gamma)
    assert torch.autograd.gradcheck(lambda z: loss(z, target), (x,), eps=1e-6, atol=1e-6)
    # the probability-input path (autograd) agrees with the logit path (hand-written)
    probs = torch.softmax(x, 1) if mode == "multiclass" else torch.sigmoid(x)
    from_probs = build_loss(
        "focal", mode=mode, ignore_index=IGNORE, alpha=alpha, gamma=gamma, from_logits=False
    )
    a, b = loss(x, target), from_probs(probs, target)
    assert a.item() == pytest.approx(b.item(), rel=1e-9)
    ga = torch.autograd.grad(a, x)[0]
    gb = torch.autograd.grad(b, x)[0]
    assert torch.allclose(ga, gb, atol=1e-9)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ALL_PLAIN + ["focal_tversky"])
def test_saturated_logits_stay_finite(name, mode):
    """Confident predictions (|z| = 60, p_t = 1 in float32), right and wrong, give finite values."""
    _, target = logits_and_target(mode, seed=24, ignore=False)
    if mode == "multiclass":
        z = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 120 - 60
    else:
        z = (target.unsqueeze(1) if mode == "binary" else target).float() * 120 - 60
    for sign in (1.0, -1.0):
        x = (sign * z).requires_grad_(True)
        for gamma in ({"gamma": 0.5},) if name in ("focal", "focal_tversky") else ({},):
            value = build_loss(name, mode=mode, **gamma)(x, target)
            value.backward()
            assert torch.isfinite(value) and torch.isfinite(x.grad).all(), (name, sign)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("beta", [0.3, 1.0])
def test_combo_paths_agree(mode, beta):
    """The fused logit paths equal the plain autograd form on probabilities."""
    logits, target = logits_and_target(mode, seed=25)
    x = logits.double()
    probs = torch.softmax(x, 1) if mode == "multiclass" else torch.sigmoid(x)
    kw = dict(mode=mode, ignore_index=IGNORE, alpha=0.6, beta=beta)
    a = build_loss("combo", **kw)(x, target)
    b = build_loss("combo", from_logits=False, **kw)(probs, target)
    assert a.item() == pytest.approx(b.item(), rel=1e-9)


@pytest.mark.parametrize("name", ALL_PLAIN + ["focal_tversky"])
def test_volumes_work_like_flattened_images(name):
    """3D logits [B, C, D, H, W] give the value of the same voxels laid out as a 2D image."""
    g = torch.Generator().manual_seed(26)
    logits = torch.randn(2, 3, 3, 4, 5, generator=g)
    target = torch.randint(0, 3, (2, 3, 4, 5), generator=g)
    target[0, 0] = IGNORE
    loss = build_loss(name, ignore_index=IGNORE)
    flat = loss(logits.reshape(2, 3, 12, 5), target.reshape(2, 12, 5))
    assert loss(logits, target).item() == pytest.approx(flat.item(), rel=1e-6)


@pytest.mark.parametrize(
    "kw", [{}, {"weights": [0.5, 2.0, 1.0]}, {"per_image": True}, {"ignore_index": IGNORE}]
)
def test_fused_dice_ce_equals_its_parts(kw):
    logits, target = logits_and_target("multiclass", b=2, c=3, h=3, w=4, seed=27, ignore="ignore_index" in kw)
    x = logits.double().requires_grad_(True)
    ce_kw = {k: v for k, v in kw.items() if k in ("weights", "ignore_index")}
    dice_kw = {k: v for k, v in kw.items() if k in ("per_image", "ignore_index")}
    fused = build_loss("dice_ce", ce_weight=0.7, dice_weight=0.3, **kw)
    parts = 0.7 * build_loss("ce", **ce_kw)(x, target) + 0.3 * build_loss("dice", **dice_kw)(x, target)
    assert fused(x, target).item() == pytest.approx(parts.item(), rel=1e-10)
    assert torch.autograd.gradcheck(lambda z: fused(z, target), (x,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", ["binary", "multilabel"])
@pytest.mark.parametrize("kw", [{}, {"per_image": True}, {"ignore_index": IGNORE}])
def test_fused_bce_dice_equals_its_parts(mode, kw):
    logits, target = logits_and_target(mode, b=2, c=3, h=3, w=4, seed=28, ignore="ignore_index" in kw)
    x = logits.double().requires_grad_(True)
    fused = build_loss("bce_dice", mode=mode, bce_weight=0.3, dice_weight=0.7, **kw)
    ce_kw = {k: v for k, v in kw.items() if k == "ignore_index"}
    parts = 0.3 * build_loss("bce", mode=mode, **ce_kw)(x, target) + 0.7 * build_loss(
        "dice", mode=mode, **kw
    )(x, target)
    assert fused(x, target).item() == pytest.approx(parts.item(), rel=1e-10)
    assert torch.autograd.gradcheck(lambda z: fused(z, target), (x,), eps=1e-6, atol=1e-6)
