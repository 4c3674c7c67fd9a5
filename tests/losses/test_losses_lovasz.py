"""Lovász hinge and Lovász-softmax against a numpy transcription of Berman et al. 2018, Algorithm 1,
and against the Jaccard loss itself at the vertices of the cube (hard predictions)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.losses import build_loss

IGNORE = 255


def np_lovasz_grad(gt_sorted: np.ndarray) -> np.ndarray:
    gts = gt_sorted.sum()
    intersection = gts - np.cumsum(gt_sorted)
    union = gts + np.cumsum(1.0 - gt_sorted)
    jaccard = 1.0 - intersection / union
    jaccard[1:] = jaccard[1:] - jaccard[:-1].copy()
    return jaccard


def np_lovasz(errors: np.ndarray, gt: np.ndarray, hinge: bool = False) -> float:
    """One Lovász term over the (already filtered) pixels of one row."""
    if errors.size == 0:
        return 0.0
    order = np.argsort(-errors, kind="stable")
    e = errors[order]
    if hinge:
        e = np.maximum(e, 0.0)
    return float(np.dot(e, np_lovasz_grad(gt[order])))


def np_softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def np_lovasz_softmax(probs, labels, classes="present", per_image=False, ignore=None):
    """probs [B, C, N], labels [B, N]. Loops over images and classes, dropping ignored pixels."""

    def flat(p, t):  # p [C, n], t [n]
        keep = np.ones_like(t, bool) if ignore is None else t != ignore
        p, t = p[:, keep], t[keep]
        losses = []
        cls = range(p.shape[0]) if isinstance(classes, str) else classes
        for c in cls:
            fg = (t == c).astype(float)
            if classes == "present" and fg.sum() == 0:
                continue
            losses.append(np_lovasz(np.abs(fg - p[c]), fg))
        return losses, keep.any()

    if per_image:
        vals = []
        for p, t in zip(probs, labels):
            losses, any_valid = flat(p, t)
            if any_valid and losses:
                vals.append(np.mean(losses))
        return float(np.mean(vals)) if vals else 0.0
    p = np.concatenate(list(probs), axis=1)
    t = np.concatenate(list(labels))
    losses, _ = flat(p, t)
    return float(np.mean(losses)) if losses else 0.0


def case(seed=0, b=3, c=4, h=5, w=6, ignore=True):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, h, w, generator=g) * 2
    target = torch.randint(0, c, (b, h, w), generator=g)
    target[1] = torch.randint(0, 2, (h, w), generator=g)  # an image where classes 2, 3 are absent
    if ignore:
        target[0, :2] = IGNORE
    return logits, target


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("classes", ["present", "all", [1, 3]])
def test_lovasz_softmax_matches_reference(per_image, classes):
    logits, target = case()
    probs = np_softmax(logits.double().numpy()).reshape(3, 4, -1)
    ref = np_lovasz_softmax(probs, target.numpy().reshape(3, -1), classes, per_image, IGNORE)
    loss = build_loss("lovasz_softmax", ignore_index=IGNORE, per_image=per_image, classes=classes)
    assert loss(logits, target).item() == pytest.approx(ref, rel=1e-5)


def test_lovasz_softmax_binary_mode_uses_two_classes():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 1, 5, 5, generator=g)
    target = torch.randint(0, 2, (2, 5, 5), generator=g)
    p = 1 / (1 + np.exp(-logits.double().numpy().reshape(2, 1, -1)))
    probs = np.concatenate([1 - p, p], 1)
    ref = np_lovasz_softmax(probs, target.numpy().reshape(2, -1))
    got = build_loss("lovasz_softmax", mode="binary")(logits, target)
    assert got.item() == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("per_image", [True, False])
def test_lovasz_hinge_matches_reference(per_image):
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 1, 5, 6, generator=g) * 2
    target = torch.randint(0, 2, (3, 5, 6), generator=g)
    target[0, :3] = IGNORE
    target[2] = 0  # an image without foreground still has a hinge term
    z = logits.double().numpy().reshape(3, -1)
    t = target.numpy().reshape(3, -1)

    def term(zz, tt):
        keep = tt != IGNORE
        zz, tt = zz[keep], tt[keep].astype(float)
        return np_lovasz(1.0 - zz * (2 * tt - 1), tt, hinge=True)

    ref = np.mean([term(zi, ti) for zi, ti in zip(z, t)]) if per_image else term(z.ravel(), t.ravel())
    got = build_loss("lovasz_hinge", mode="binary", ignore_index=IGNORE, per_image=per_image)(logits, target)
    assert got.item() == pytest.approx(ref, rel=1e-5)


def test_lovasz_equals_jaccard_loss_at_hard_predictions():
    """At a vertex (hard prediction) the Lovász extension equals the Jaccard loss (Berman eq. 8)."""
    g = torch.Generator().manual_seed(3)
    target = torch.randint(0, 3, (2, 6, 6), generator=g)
    pred = target.clone()
    pred[:, :2] = torch.randint(0, 3, (2, 2, 6), generator=g)  # some mistakes
    probs = torch.nn.functional.one_hot(pred, 3).permute(0, 3, 1, 2).double()
    ious = []
    for c in range(3):
        inter = ((pred == c) & (target == c)).sum().item()
        union = ((pred == c) | (target == c)).sum().item()
        if (target == c).any():
            ious.append(inter / union)
    got = build_loss("lovasz_softmax", from_logits=False)(probs, target)
    assert got.item() == pytest.approx(1 - np.mean(ious), rel=1e-9)
    # hinge: logits ±1 give errors 0 (right) or 2 (wrong): 2 · (1 - IoU of the foreground)
    fg_t = target[:1] > 0
    fg_p = pred[:1] > 0
    logits = (fg_p.double() * 2 - 1).unsqueeze(1)
    iou = (fg_t & fg_p).sum().item() / (fg_t | fg_p).sum().item()
    got = build_loss("lovasz_hinge", mode="binary")(logits, fg_t.long())
    assert got.item() == pytest.approx(2 * (1 - iou), rel=1e-9)


def test_lovasz_perfect_prediction_is_zero():
    _, target = case(ignore=False)
    probs = torch.nn.functional.one_hot(target, 4).permute(0, 3, 1, 2).float()
    assert build_loss("lovasz_softmax", from_logits=False)(probs, target).item() == 0.0
    fg = (target > 0).long()
    logits = (fg.float() * 2 - 1).unsqueeze(1) * 3
    assert build_loss("lovasz_hinge", mode="binary")(logits, fg).item() == 0.0


@pytest.mark.parametrize(
    "name,mode",
    [
        ("lovasz_softmax", "multiclass"),
        ("lovasz_softmax", "binary"),
        ("lovasz_hinge", "binary"),
        ("lovasz_hinge", "multilabel"),
    ],
)
def test_lovasz_gradcheck_float64(name, mode):
    g = torch.Generator().manual_seed(4)
    c = {"multiclass": 3, "binary": 1, "multilabel": 2}[mode]
    x = (torch.randn(2, c, 3, 4, generator=g, dtype=torch.float64) * 2).requires_grad_(True)
    shape = (2, 3, 4) if mode != "multilabel" else (2, c, 3, 4)
    target = torch.randint(0, max(c, 2), shape, generator=g)
    target[0, ..., 0, :2] = IGNORE
    loss = build_loss(name, mode=mode, ignore_index=IGNORE)
    assert torch.autograd.gradcheck(lambda z: loss(z, target), (x,), eps=1e-6, atol=1e-6)


def test_lovasz_options_are_checked():
    with pytest.raises(ValueError, match="binary loss"):
        build_loss("lovasz_hinge", mode="multiclass")
    with pytest.raises(ValueError, match="classes"):
        build_loss("lovasz_softmax", classes="some")
    logits, target = case(ignore=False)
    with pytest.raises(ValueError, match="out of range"):
        build_loss("lovasz_softmax", classes=[0, 7])(logits, target)


def test_packed_key_sort_orders_like_torch_sort():
    from medseg.losses.lovasz import sort_descending

    g = torch.Generator().manual_seed(5)
    e = torch.randn(3, 1000, generator=g) * 10
    e[0, :10] = float("-inf")
    e[1, :50] = 0.25  # ties
    e[2, :5] = -0.0
    perm = sort_descending(e)
    values = e.gather(1, perm)
    assert torch.equal(values, torch.sort(e, dim=1, descending=True)[0])
    assert torch.equal(perm.sort(1)[0], torch.arange(1000).expand(3, -1))  # a permutation per row
