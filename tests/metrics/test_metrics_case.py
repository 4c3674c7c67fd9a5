"""evaluate_case / evaluate_volume: per-class values agree with the binary functions; ROI,
ignore_index, background, empty classes, the volume protocol and the legacy (TransUNet) rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medseg import metrics as M

SURF = ("hd", "hd95", "assd", "nsd")


def same(a: dict, b: dict) -> None:
    """Nested per-class results are equal (nan == nan)."""
    assert sorted(a) == sorted(b)
    for c in a:
        assert a[c] == pytest.approx(b[c], nan_ok=True), c


def _labels(shape, k, seed):
    rng = np.random.default_rng(seed)
    from scipy import ndimage

    noise = ndimage.gaussian_filter(rng.standard_normal((k, *shape)), 1.0)
    return noise.argmax(axis=0)


def _check_class(res, p, t, sp, roi=None, tol=1.0):
    pc, tc = (p, t) if roi is None else (p & roi, t & roi)
    for name in M.OVERLAP_METRICS:
        f = getattr(M, name)
        kw = {"roi": roi} if roi is not None else {}
        assert res[name] == pytest.approx(f(p, t, **kw), nan_ok=True), name
    surf = M.surface_metrics(pc, tc, sp, tolerance=tol)
    for name in SURF:
        assert res[name] == pytest.approx(surf[name], nan_ok=True), name


@pytest.mark.parametrize("shape, sp", [((24, 30), (0.7, 1.1)), ((6, 14, 12), (3.0, 0.8, 0.8))])
def test_per_class_matches_binary_functions(shape, sp):
    k = 4
    t = _labels(shape, k, 0)
    p = _labels(shape, k, 1)
    res = M.evaluate_case(p, t, k, spacing=sp, nsd_tolerance=1.5)
    assert sorted(res) == [1, 2, 3]
    for c in res:
        _check_class(res[c], p == c, t == c, sp, tol=1.5)
        assert res[c]["tp"] == int(((p == c) & (t == c)).sum())
    with_bg = M.evaluate_case(p, t, k, spacing=sp, include_background=True, nsd_tolerance=1.5)
    assert sorted(with_bg) == [0, 1, 2, 3]
    _check_class(with_bg[0], p == 0, t == 0, sp, tol=1.5)


def test_roi_and_ignore_index():
    k = 3
    t = _labels((20, 22), k, 2)
    p = _labels((20, 22), k, 3)
    yy, xx = np.mgrid[:20, :22]
    roi = (yy - 10) ** 2 + (xx - 11) ** 2 < 64  # a disc-shaped field of view
    res = M.evaluate_case(p, t, k, roi=roi)
    for c in res:
        _check_class(res[c], p == c, t == c, None, roi=roi)
    # the same pixels marked 255 in the target are ignored identically
    t_ign = np.where(roi, t, 255)
    res_ign = M.evaluate_case(p, t_ign, k, ignore_index=255)
    for c in res:
        assert res_ign[c] == pytest.approx(res[c], nan_ok=True)
    # background inside the ROI only
    res_bg = M.evaluate_case(p, t, k, roi=roi, include_background=True)
    _check_class(res_bg[0], p == 0, t == 0, None, roi=roi)


def test_empty_classes_flags_and_counts():
    t = np.zeros((10, 10), np.int64)
    p = np.zeros((10, 10), np.int64)
    t[2:5, 2:5] = 1  # class 1: target only (missed)
    p[6:8, 6:8] = 2  # class 2: prediction only (false positive)
    # class 3: absent from both
    res = M.evaluate_case(p, t, 4, spacing=(2.0, 1.0))
    r1, r2, r3 = res[1], res[2], res[3]
    assert (r1["empty_target"], r1["empty_pred"]) == (False, True)
    assert (r2["empty_target"], r2["empty_pred"]) == (True, False)
    assert (r3["empty_target"], r3["empty_pred"]) == (True, True)
    assert r1["dice"] == 0.0 and math.isnan(r1["hd95"]) and r1["nsd"] == 0.0
    assert r2["dice"] == 0.0 and math.isnan(r2["hd95"])
    assert r3["dice"] == 1.0 and r3["hd95"] == 0.0 and r3["nsd"] == 1.0
    mx = M.evaluate_case(p, t, 4, spacing=(2.0, 1.0), empty="max")
    assert mx[1]["hd95"] == pytest.approx(math.hypot(20.0, 10.0))
    lg = M.evaluate_case(p, t, 4, spacing=(2.0, 1.0), empty="legacy")
    assert (lg[1]["dice"], lg[1]["hd95"]) == (0.0, 0.0)
    assert (lg[2]["dice"], lg[2]["hd95"]) == (1.0, 0.0)
    assert (lg[3]["dice"], lg[3]["hd95"]) == (0.0, 0.0)


def test_binary_task_and_inputs():
    rng = np.random.default_rng(4)
    t = (rng.random((12, 12)) < 0.3).astype(np.int64)
    p = (rng.random((12, 12)) < 0.3).astype(np.int64)
    a = M.evaluate_case(p, t, 2)
    b = M.evaluate_case(torch.from_numpy(p), torch.from_numpy(t).float(), 1)  # 1 == binary
    same(a, b)
    assert sorted(a) == [1]
    s = M.evaluate_case(p, t, 2, surface=False)
    assert math.isnan(s[1]["hd95"]) and s[1]["dice"] == a[1]["dice"]


def test_bad_label_inputs():
    t = np.zeros((4, 4), np.int64)
    with pytest.raises(ValueError, match="outside 0..2"):
        M.evaluate_case(t + 3, t, 3)
    with pytest.raises(ValueError, match="same shape"):
        M.evaluate_case(t, np.zeros((4, 5)), 3)
    with pytest.raises(ValueError, match="whole class indices"):
        M.evaluate_case(t + 0.5, t, 3)
    with pytest.raises(ValueError, match="outside"):
        M.evaluate_case(t, t + 255, 3)  # 255 not declared as ignore_index


# ------------------------------------------------------------ volume protocol and the legacy rule


def _transunet_reference(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """The rule of TransUNet's calculate_metric_percase, written out: medpy dice and hd95
    (pooled 95th percentile, no spacing) when both present, else (1, 0) or (0, 0)."""
    from test_metrics_surface import ref_directed, ref_percentile

    if pred.sum() > 0 and gt.sum() > 0:
        dice = 2 * (pred & gt).sum() / (pred.sum() + gt.sum())
        a, b = ref_directed(pred, gt, (1.0,) * pred.ndim)
        return float(dice), ref_percentile(np.concatenate([a, b]), 95)
    if pred.sum() > 0 and gt.sum() == 0:
        return 1.0, 0.0
    return 0.0, 0.0


def test_volume_protocol_stacks_slices():
    k = 3
    t = _labels((5, 12, 11), k, 7)
    p = _labels((5, 12, 11), k, 8)
    sp = (3.0, 0.7, 0.7)
    vol = M.evaluate_case(p, t, k, spacing=sp)
    from_slices = M.evaluate_volume(
        [p[i] for i in range(5)], [torch.from_numpy(t[i]) for i in range(5)], k, sp
    )
    same(from_slices, vol)
    with pytest.raises(ValueError, match="same shape"):
        M.evaluate_volume([p[0], p[1][:5]], [t[0], t[1]], k)


def test_legacy_reproduces_transunet_rule():
    k = 4
    t = _labels((4, 10, 9), k, 11)
    p = _labels((4, 10, 9), k, 12)
    t[t == 3] = 0  # class 3 absent from the target: a false-positive organ
    p[p == 2] = 0  # class 2 absent from the prediction: a missed organ
    res = M.evaluate_volume(p, t, k, empty="legacy", hd_combine="pooled")
    for c in (1, 2, 3):
        dice, hd = _transunet_reference(p == c, t == c)
        assert res[c]["dice"] == pytest.approx(dice)
        assert res[c]["hd95"] == pytest.approx(hd)
    assert res[3]["dice"] == 1.0  # the inflation the legacy rule is documented for
    default = M.evaluate_volume(p, t, k)
    assert default[3]["dice"] == 0.0 and math.isnan(default[3]["hd95"])
