"""Every metric on 3-D label maps with anisotropic spacing, against references written here with
plain numpy counts and SciPy's exact Euclidean distance transform (a different algorithm from
medseg's default search)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from medseg import metrics as M

SPACING = (3.0, 0.8, 1.1)  # thick slices, anisotropic in-plane: (z, y, x) mm


def label_volumes(seed: int = 0, shape=(10, 22, 19), k: int = 3):
    """Smooth random blobs of ``k - 1`` classes and a perturbed copy (shifted, some voxels flipped)."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=(k - 1, *shape)), sigma=(0, 1.5, 2.5, 2.5))
    target = np.where(field.max(0) > 0.12, field.argmax(0) + 1, 0).astype(np.int64)
    pred = np.roll(target, shift=(1, -2, 1), axis=(0, 1, 2))
    flip = rng.random(shape) < 0.03
    pred[flip] = rng.integers(0, k, size=int(flip.sum()))
    return pred, target


def ref_boundary(mask: np.ndarray) -> np.ndarray:
    """Voxels of the mask with a face neighbour outside it (outside the array counts as outside)."""
    cross = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=cross, border_value=0)


def ref_directed(a: np.ndarray, b: np.ndarray, spacing) -> np.ndarray:
    """Distance (mm) from every boundary voxel of ``a`` to the nearest boundary voxel of ``b``."""
    dist_to_b = ndimage.distance_transform_edt(~ref_boundary(b), sampling=spacing)
    return dist_to_b[ref_boundary(a)]


def ref_surface(pred: np.ndarray, target: np.ndarray, spacing, tol: float) -> dict[str, float]:
    a, b = ref_directed(pred, target, spacing), ref_directed(target, pred, spacing)
    both = np.concatenate([a, b])
    return {
        "hd": float(both.max()),
        "hd95": max(float(np.percentile(a, 95)), float(np.percentile(b, 95))),
        "hd95_pooled": float(np.percentile(both, 95)),
        "assd": float(both.mean()),
        "assd_mean": 0.5 * (float(a.mean()) + float(b.mean())),
        "nsd": float((both <= tol).mean()),
    }


def ref_overlap(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    tp = float((pred & target).sum())
    fp = float((pred & ~target).sum())
    fn = float((~pred & target).sum())
    tn = float((~pred & ~target).sum())
    return {
        "dice": 2 * tp / (2 * tp + fp + fn),
        "iou": tp / (tp + fp + fn),
        "sensitivity": tp / (tp + fn),
        "specificity": tn / (tn + fp),
        "precision": tp / (tp + fp),
        "accuracy": (tp + tn) / pred.size,
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_metrics_3d_anisotropic(seed):
    pred, target = label_volumes(seed)
    p, t = pred == 1, target == 1
    assert ref_boundary(p).sum() > 50 and p.ndim == 3
    for name, value in ref_overlap(p, t).items():
        assert getattr(M, name)(p, t) == pytest.approx(value, rel=1e-12), name
    ref = ref_surface(p, t, SPACING, tol=2.0)
    assert M.hausdorff(p, t, SPACING) == pytest.approx(ref["hd"], rel=1e-9)
    assert M.hd95(p, t, SPACING) == pytest.approx(ref["hd95"], rel=1e-9)
    assert M.hd95(p, t, SPACING, combine="pooled") == pytest.approx(ref["hd95_pooled"], rel=1e-9)
    assert M.assd(p, t, SPACING) == pytest.approx(ref["assd"], rel=1e-9)
    assert M.assd(p, t, SPACING, combine="mean") == pytest.approx(ref["assd_mean"], rel=1e-9)
    assert M.nsd(p, t, 2.0, SPACING) == pytest.approx(ref["nsd"], rel=1e-12)


@pytest.mark.parametrize("method", ["grid", "kdtree", "edt"])
def test_every_distance_method_matches_the_reference_3d(method):
    pred, target = label_volumes(3)
    p, t = pred == 2, target == 2
    ref = ref_surface(p, t, SPACING, tol=1.5)
    got = M.surface_metrics(p, t, SPACING, tolerance=1.5, method=method)
    for key in ("hd", "hd95", "assd", "nsd"):
        assert got[key] == pytest.approx(ref[key], rel=1e-9), (method, key)


def test_spacing_matters_in_3d():
    """The reference is sensitive to the spacing axis order: a wrong order would show."""
    pred, target = label_volumes(4)
    p, t = pred == 1, target == 1
    a = ref_surface(p, t, SPACING, 1.0)["assd"]
    b = ref_surface(p, t, SPACING[::-1], 1.0)["assd"]
    assert abs(a - b) > 0.05
    assert M.assd(p, t, SPACING[::-1]) == pytest.approx(b, rel=1e-9)


def test_evaluate_case_3d_per_class_with_ignore_and_roi():
    pred, target = label_volumes(5)
    target[0, :5] = 255  # ignored voxels
    roi = np.ones(target.shape, bool)
    roi[:, :, -3:] = False  # outside the field of view
    res = M.evaluate_case(pred, target, 3, SPACING, ignore_index=255, roi=roi, nsd_tolerance=2.0)
    valid = roi & (target != 255)
    for c in (1, 2):
        pv, tv = pred[valid] == c, target[valid] == c
        for name, value in ref_overlap(pv, tv).items():
            assert res[c][name] == pytest.approx(value, rel=1e-12), (c, name)
        # surface metrics: both masks cut to the valid region (outside counts as background)
        ps, ts = (pred == c) & valid, (target == c) & valid
        ref = ref_surface(ps, ts, SPACING, tol=2.0)
        for key in ("hd", "hd95", "assd", "nsd"):
            assert res[c][key] == pytest.approx(ref[key], rel=1e-9), (c, key)
        tp = int((pv & tv).sum())
        assert res[c]["tp"] == tp and not res[c]["empty_target"]


def test_evaluate_volume_stacks_slices_like_a_3d_case():
    pred, target = label_volumes(6)
    stacked = M.evaluate_volume(list(pred), list(target), 3, SPACING)
    whole = M.evaluate_case(torch.from_numpy(pred), torch.from_numpy(target), 3, SPACING)
    ref = ref_surface(pred == 2, target == 2, SPACING, tol=1.0)
    for key in ("dice", "iou", "hd", "hd95", "assd", "nsd"):
        assert stacked[2][key] == pytest.approx(whole[2][key], rel=1e-12)
    for key in ("hd", "hd95", "assd", "nsd"):
        assert whole[2][key] == pytest.approx(ref[key], rel=1e-9)


def test_hand_worked_3d_slabs():
    """Two 1-voxel-thick planes two slices apart (3 mm each): every distance is 6 mm."""
    p = np.zeros((6, 4, 5), bool)
    t = np.zeros_like(p)
    p[1], t[3] = True, True
    assert M.hd95(p, t, SPACING) == pytest.approx(6.0)
    assert M.assd(p, t, SPACING) == pytest.approx(6.0)
    assert M.nsd(p, t, 5.9, SPACING) == 0.0 and M.nsd(p, t, 6.0, SPACING) == 1.0
    assert M.dice(p, t) == 0.0 and M.iou(p, p) == 1.0
