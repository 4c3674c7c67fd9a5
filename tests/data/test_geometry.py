"""Volume geometry: the pixdim rule, RAS orientation, slice axis, resampling and its inverse.

References are independent of the code under test: hand-built affines and permutations,
shapes computed by hand, analytic functions sampled at the voxel centres.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from medseg.data.geometry import (
    GeometryWarning,
    affine_spacing,
    case_slice_axis,
    from_ras,
    lowres_axis,
    resample_image,
    resample_labels,
    resampled_shape,
    restore_prediction,
    slice_axis,
    to_model_grid,
    to_ras,
    voxel_affine,
)
from medseg.data.geometry.affine import reset_warning


@pytest.fixture(autouse=True)
def _fresh_warning():
    reset_warning()
    yield
    reset_warning()


# --------------------------------------------------------------------------- pixdim rule


def test_unit_affine_takes_pixdim_spacing_and_keeps_direction():
    acdc_like = np.diag([-1.0, -1.0, 1.0, 1.0])
    acdc_like[:3, 3] = (5.0, -7.0, 2.0)
    with pytest.warns(GeometryWarning, match="case.nii.gz: affine voxel size"):
        fixed = voxel_affine(acdc_like, (1.64, 1.64, 10.0), "case.nii.gz")
    expected = np.diag([-1.64, -1.64, 10.0, 1.0])
    expected[:3, 3] = (5.0, -7.0, 2.0)
    np.testing.assert_allclose(fixed, expected)
    assert affine_spacing(fixed) == pytest.approx((1.64, 1.64, 10.0))


def test_agreeing_affine_is_unchanged_and_silent():
    theta = 0.3  # an oblique affine whose columns already have the pixdim norms
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rot * np.array([0.7, 0.8, 3.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(voxel_affine(aff, (0.7, 0.8, 3.0), "x.nii"), aff)


def test_disagreement_warns_once_per_process():
    with pytest.warns(GeometryWarning) as record:
        voxel_affine(np.eye(4), (2.0, 2.0, 2.0), "first.nii")
        voxel_affine(np.eye(4), (3.0, 3.0, 3.0), "second.nii")
    assert len(record) == 1 and "first.nii" in str(record[0].message)


# --------------------------------------------------------------------------- orientation


def _stored_variant(ras: np.ndarray, ras_affine: np.ndarray, perm, flips):
    """The same image stored with axes permuted and flipped, and its affine built by hand.

    stored axis a = RAS axis perm[a], reversed when flips[a]; so stored voxel index s maps to
    RAS voxel index r with r[perm[a]] = (n - 1 - s[a]) if flipped else s[a].
    """
    stored = np.transpose(ras, perm)
    for a, f in enumerate(flips):
        if f:
            stored = np.flip(stored, a)
    m = np.zeros((4, 4))
    m[3, 3] = 1
    for a, (p, f) in enumerate(zip(perm, flips)):
        m[p, a] = -1.0 if f else 1.0
        m[p, 3] = ras.shape[p] - 1 if f else 0.0
    return np.ascontiguousarray(stored), ras_affine @ m


@pytest.mark.parametrize("perm,flips", [((2, 0, 1), (True, False, True)), ((1, 2, 0), (False, True, False))])
def test_orientation_round_trip_is_exact(perm, flips):
    rng = np.random.default_rng(0)
    ras = rng.normal(size=(5, 6, 7)).astype(np.float32)
    ras_affine = np.diag([0.8, 0.9, 4.0, 1.0])
    ras_affine[:3, 3] = (-10.0, 3.0, 7.0)
    stored, stored_affine = _stored_variant(ras, ras_affine, perm, flips)
    assert stored.shape != ras.shape
    canon, canon_affine, reo = to_ras(stored, stored_affine)
    np.testing.assert_array_equal(canon, ras)
    np.testing.assert_allclose(canon_affine, ras_affine, atol=1e-12)
    np.testing.assert_array_equal(from_ras(canon, reo), stored)
    # channels last ride along
    two = np.stack([stored, -stored], axis=-1)
    np.testing.assert_array_equal(to_ras(two, stored_affine)[0][..., 1], -ras)


def test_slice_axis_is_the_largest_spacing_first_on_ties():
    assert slice_axis((1.5, 1.5, 10.0)) == 2
    assert slice_axis((10.0, 1.5, 1.5)) == 0
    assert slice_axis((1.0, 1.0, 1.0)) == 0
    assert slice_axis((1.0, 3.0, 3.0)) == 1
    assert slice_axis((1.0, 3.0, 3.0000001)) == 1  # within the tie tolerance


def test_case_slice_axis_follows_ras_not_storage():
    ras_affine = np.diag([1.5, 1.5, 8.0, 1.0])  # thick slices along S
    _, stored_affine = _stored_variant(np.zeros((4, 4, 3)), ras_affine, (2, 0, 1), (False, True, False))
    assert affine_spacing(stored_affine) == pytest.approx((8.0, 1.5, 1.5))  # stored: thick axis first
    assert case_slice_axis(stored_affine) == 2


# --------------------------------------------------------------------------- resampling


def test_resampled_shape_by_hand():
    assert resampled_shape((100, 80, 12), (1.5, 1.5, 10.0), (1.0, 1.0, 5.0)) == (150, 120, 24)
    # 101*0.7 = 70.7 -> 71, 81*0.7 = 56.7 -> 57, 13*3.3/3 = 14.3 -> 14
    assert resampled_shape((101, 81, 13), (0.7, 0.7, 3.3), (1.0, 1.0, 3.0)) == (71, 57, 14)
    img = np.zeros((101, 81, 13), np.float32)
    assert resample_image(img, (0.7, 0.7, 3.3), (1.0, 1.0, 3.0), order=1).shape == (71, 57, 14)


def test_anisotropy_rule():
    assert lowres_axis((1.5, 1.5, 10.0), (1.0, 1.0, 1.0)) == 2  # old spacing anisotropic
    assert lowres_axis((1.0, 1.0, 1.0), (1.0, 4.0, 1.0)) == 1  # else the new one decides
    assert lowres_axis((1.0, 1.0, 2.9), (1.0, 1.0, 1.0)) is None  # ratio <= 3
    assert lowres_axis((1.0, 5.0, 5.0), (1.0, 1.0, 1.0)) is None  # two low-resolution axes
    assert lowres_axis((1.0, 1.0), (4.0, 1.0)) is None  # 2D: no separate axis


def _smooth(coords: list[np.ndarray]) -> np.ndarray:
    x, y, z = np.meshgrid(*coords, indexing="ij")
    return np.sin(2 * np.pi * x / 40) + np.cos(2 * np.pi * y / 50) * np.sin(2 * np.pi * z / 60)


def _centres(n_in: int, n_out: int) -> np.ndarray:
    """Input coordinate of each output voxel centre (centres aligned), by hand."""
    return (np.arange(n_out) + 0.5) * n_in / n_out - 0.5


def test_resampled_image_matches_the_analytic_function():
    shape = (40, 36, 30)
    vol = _smooth([np.arange(n, dtype=float) for n in shape])
    out = resample_image(vol, (1.0, 1.0, 1.0), (0.5, 0.8, 1.25), order=3)
    assert out.shape == (80, 45, 24)
    centres = [_centres(n, m) for n, m in zip(shape, out.shape)]
    ref = _smooth(centres)
    # away from the borders, where the spline's boundary extension (mode "nearest") matters
    inner = np.ix_(*[(c >= 8) & (c <= n - 9) for c, n in zip(centres, shape)])
    assert np.abs(out[inner] - ref[inner]).max() < 1e-4
    linear = resample_image(vol, (1.0, 1.0, 1.0), (0.5, 0.8, 1.25), order=1)
    assert np.abs(linear[inner] - ref[inner]).max() < 2e-2  # linear: h^2 f''/8 ~ 0.0031 per axis


def test_resampling_round_trip_smooth_image():
    shape = (30, 26, 22)
    vol = _smooth([np.arange(n, dtype=float) for n in shape]).astype(np.float32)
    up = resample_image(vol, (1.0, 1.0, 1.0), (0.6, 0.6, 0.6))
    back = resample_image(up, (0.6, 0.6, 0.6), (1.0, 1.0, 1.0), out_shape=shape)
    assert back.shape == shape and back.dtype == np.float32
    assert np.abs(back - vol)[2:-2, 2:-2, 2:-2].max() < 5e-3
    assert np.abs(back - vol).mean() < 2e-3


def _blocks(shape, size=6, classes=4, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, classes, size=[-(-n // size) for n in shape]).astype(np.uint8)
    for a in range(3):
        coarse = np.repeat(coarse, size, axis=a)
    return coarse[: shape[0], : shape[1], : shape[2]]


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_label_round_trip_on_blocks(mode):
    lab = _blocks((30, 24, 18))
    up = resample_labels(lab, (1.0, 1.0, 1.0), (0.7, 0.7, 0.7), mode=mode)
    back = resample_labels(up, (0.7, 0.7, 0.7), (1.0, 1.0, 1.0), mode=mode, out_shape=lab.shape)
    assert back.shape == lab.shape and back.dtype == lab.dtype
    assert (back == lab).mean() > 0.97
    assert set(np.unique(back)) <= set(np.unique(lab))


def test_nearest_labels_exact_on_integer_factors():
    lab = _blocks((12, 10, 8), size=3)
    up = resample_labels(lab, (1.0, 1.0, 1.0), (0.5, 0.5, 0.5), mode="nearest")
    np.testing.assert_array_equal(up, np.repeat(np.repeat(np.repeat(lab, 2, 0), 2, 1), 2, 2))
    back = resample_labels(up, (0.5, 0.5, 0.5), (1.0, 1.0, 1.0), mode="nearest", out_shape=lab.shape)
    np.testing.assert_array_equal(back, lab)


def test_anisotropic_volume_uses_nearest_through_plane():
    # every slice along the thick axis holds one constant value: nearest must not blend slices
    vol = np.broadcast_to(np.arange(6, dtype=np.float32) * 10.0, (16, 16, 6)).copy()
    out = resample_image(vol, (1.0, 1.0, 8.0), (1.0, 1.0, 3.0), order=3)
    assert out.shape == (16, 16, 16)
    idx = np.floor((np.arange(16) + 0.5) * 6 / 16).astype(int)  # nearest slice, by hand
    np.testing.assert_allclose(out, np.broadcast_to(idx * 10.0, out.shape), atol=1e-4)
    iso = resample_image(vol, (1.0, 1.0, 2.0), (1.0, 1.0, 0.75), order=1)  # ratio 2: blends
    assert not np.isin(np.round(iso[0, 0], 3), np.arange(6) * 10.0).all()


# --------------------------------------------------------------------------- forward and inverse


def _stored_case(seed=1):
    ras_lab = _blocks((40, 36, 8), size=6, seed=seed)
    ras_img = ras_lab.astype(np.float32) + 0.1 * _smooth([np.arange(n, dtype=float) for n in ras_lab.shape])
    ras_affine = np.diag([1.4, 1.4, 7.0, 1.0])
    ras_affine[:3, 3] = (-20.0, 15.0, 3.0)
    img, affine = _stored_variant(ras_img, ras_affine, (2, 1, 0), (True, False, True))
    lab, _ = _stored_variant(ras_lab, ras_affine, (2, 1, 0), (True, False, True))
    return img, lab.astype(np.int16), affine


def test_prediction_maps_back_to_the_input_grid():
    img, lab, affine = _stored_case()
    x, y, grid_affine, rec = to_model_grid(img, affine, (1.0, 1.0, 3.0), lab)
    assert x.shape == (56, 50, 19) and y.shape == x.shape  # 40*1.4, 36*1.4, 8*7/3 rounded
    assert affine_spacing(grid_affine) == pytest.approx((40 * 1.4 / 56, 36 * 1.4 / 50, 8 * 7.0 / 19))
    labels, out_affine = restore_prediction(y, rec)
    assert labels.shape == lab.shape and labels.dtype == lab.dtype
    np.testing.assert_array_equal(out_affine, affine)
    assert (labels == lab).mean() > 0.97
    probs = np.stack([(y == c) for c in range(4)], axis=-1).astype(np.float32)
    p, _ = restore_prediction(probs, rec, kind="probabilities")
    assert p.shape == lab.shape + (4,) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
    assert (p.argmax(-1) == lab).mean() > 0.97


def test_grid_affine_maps_voxel_centres_to_the_same_world_points():
    img, _, affine = _stored_case()
    _, _, grid_affine, rec = to_model_grid(img, affine, (1.0, 1.0, 3.0))
    ras_affine = to_ras(img, affine)[1]
    rng = np.random.default_rng(0)
    for _ in range(5):  # output voxel o sits at RAS input coordinate (o + 0.5) * n_in / n_out - 0.5
        o = [int(rng.integers(0, n)) for n in rec.model_shape]
        i = [_centres(n_in, n_out)[k] for n_in, n_out, k in zip(rec.ras_shape, rec.model_shape, o)]
        np.testing.assert_allclose(grid_affine @ [*o, 1.0], ras_affine @ [*i, 1.0], atol=1e-9)


def test_restore_rejects_a_prediction_on_another_grid():
    img, _, affine = _stored_case()
    _, _, _, rec = to_model_grid(img, affine, (1.0, 1.0, 3.0))
    with pytest.raises(ValueError, match="does not match the model grid"):
        restore_prediction(np.zeros((3, 3, 3), np.uint8), rec)
