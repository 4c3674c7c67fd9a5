"""Datasets: every format on tiny files made in tmp_path, splits, mask mapping, bad input."""

from __future__ import annotations

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from medseg.data import AugmentConfig, DataConfig, build_data, open_cases, save_nifti_like
from medseg.errors import DataError

NOAUG = AugmentConfig(enabled=False)


def _img(rng, h, w, c):
    a = rng.integers(0, 256, (h, w, c), dtype=np.uint8)
    return a[..., 0] if c == 1 else a


def _mask(rng, h, w, values=(0, 255)):
    m = np.zeros((h, w), np.uint8)
    m[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = values[1]
    m[: h // 8, : w // 8] = values[-1]
    return m


def make_folder(root, n=6, h=20, w=24, c=3, ext="png", seed=0, mask_values=(0, 255)):
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    imgs, masks = {}, {}
    for k in range(n):
        cid = f"c{k}"
        im = _img(rng, h, w, c)
        m = _mask(rng, h, w, mask_values)
        if ext == "tif":
            import tifffile

            tifffile.imwrite(root / "images" / f"{cid}.tif", im)
        else:
            Image.fromarray(im).save(root / "images" / f"{cid}.{ext}")
        Image.fromarray(m).save(root / "masks" / f"{cid}.png")
        imgs[cid], masks[cid] = im, m
    return imgs, masks


def cfg_for(root, **kw):
    kw.setdefault("size", (16, 16))
    return DataConfig(root=root, **kw)


# --------------------------------------------------------------------------- folder formats


@pytest.mark.parametrize("ext,c", [("png", 3), ("png", 1), ("jpg", 3), ("bmp", 3), ("tif", 3), ("tif", 1)])
def test_folder_formats(tmp_path, ext, c):
    imgs, masks = make_folder(tmp_path, ext=ext, c=c)
    data = build_data(cfg_for(tmp_path, split={"val_fraction": 0.34}), NOAUG, seed=0)
    assert data.num_classes == 2 and data.in_channels == c and not data.volumetric
    assert len(data.train) + len(data.val) == 6 and len(data.val) == 2 and len(data.test) == 0
    s = data.train[0]
    assert s["image"].shape == (c, 16, 16) and s["image"].dtype == torch.float32
    assert s["mask"].dtype == torch.int64 and set(s["mask"].unique().tolist()) <= {0, 1}
    assert s["roi"].dtype == torch.bool
    case = data.val[0]
    cid = case["id"]
    assert case["image"].shape == (c, 20, 24)
    np.testing.assert_array_equal(case["mask"].numpy(), (masks[cid] == 255).astype(np.int64))
    if ext in ("png", "bmp", "tif"):  # lossless: the overlay image is the file
        ref = imgs[cid] if c == 3 else np.repeat(imgs[cid][..., None], 3, -1)
        np.testing.assert_array_equal(case["display"], ref)
    # z-score per channel with statistics of the whole image
    x = case["image"].numpy().reshape(c, -1)
    np.testing.assert_allclose(x.mean(1), 0, atol=1e-4)
    np.testing.assert_allclose(x.std(1), 1, atol=1e-3)


def test_normalize_modes(tmp_path):
    imgs, _ = make_folder(tmp_path, n=3)
    for mode in ("minmax", "none"):
        cases = open_cases(tmp_path, cfg=cfg_for(tmp_path, normalize=mode))
        case = cases[0]
        x = case["image"].numpy()
        ref = imgs[case["id"]].astype(np.float32).transpose(2, 0, 1) / 255
        if mode == "none":
            np.testing.assert_allclose(x, ref, atol=1e-6)
        else:
            lo, hi = ref.reshape(3, -1).min(1), ref.reshape(3, -1).max(1)
            np.testing.assert_allclose(x, (ref - lo[:, None, None]) / (hi - lo)[:, None, None], atol=1e-5)


def test_mask_mapping_and_ignore(tmp_path):
    make_folder(tmp_path, n=3, mask_values=(0, 128, 255))
    with pytest.raises(DataError, match=r"c0\.png.*mask_values"):
        build_data(cfg_for(tmp_path), NOAUG, seed=0)
    data = build_data(
        cfg_for(tmp_path, mask_values={0: 0, 128: 1, 255: 2}, split={"val_fraction": 0.4}), NOAUG, seed=0
    )
    assert data.num_classes == 3 and data.class_names == ["background", "class1", "class2"]
    m = data.val[0]["mask"].numpy()
    assert m[0, 0] == 2 and m[10, 12] == 1 and m[19, 23] == 0
    # class 255 = ignored: roi is False there and the mask holds a valid class
    data = build_data(
        cfg_for(tmp_path, mask_values={0: 0, 128: 1, 255: 255}, split={"val_fraction": 0.4}), NOAUG, seed=0
    )
    case = data.val[0]
    assert data.num_classes == 2
    assert not case["roi"][0, 0] and case["roi"][10, 12] and case["mask"][0, 0] == 0


def test_mask_threshold_for_jpeg_noise(tmp_path):
    make_folder(tmp_path, n=3)
    rng = np.random.default_rng(1)
    for p in (tmp_path / "masks").iterdir():
        m = np.asarray(Image.open(p)).astype(int)
        noisy = np.where(m > 0, 255 - rng.integers(0, 9, m.shape), rng.integers(0, 9, m.shape))
        Image.fromarray(noisy.astype(np.uint8)).save(p)
    with pytest.raises(DataError, match="mask_threshold"):
        build_data(cfg_for(tmp_path), NOAUG, seed=0)
    cases = open_cases(tmp_path, cfg=cfg_for(tmp_path, mask_threshold=128))
    m = cases[0]["mask"].numpy()
    assert set(np.unique(m)) == {0, 1} and m[10, 12] == 1 and m[19, 23] == 0


def test_split_files_and_val_carving(tmp_path):
    make_folder(tmp_path, n=8)
    (tmp_path / "train.txt").write_text("c0\nc1\nc2\nc3\nc4\n")
    (tmp_path / "test.txt").write_text("c5.png\nc6\n")  # extensions are ignored
    data = build_data(cfg_for(tmp_path, split={"val_fraction": 0.2}), NOAUG, seed=0)
    assert data.test.ids == ["c5", "c6"]
    assert len(data.val) == 1 and sorted(data.train.ids + data.val.ids) == ["c0", "c1", "c2", "c3", "c4"]
    data = build_data(cfg_for(tmp_path, split={"val_fraction": 0.0}), NOAUG, seed=0)
    assert data.train.ids == ["c0", "c1", "c2", "c3", "c4"] and len(data.val) == 0
    (tmp_path / "val.txt").write_text("c7\n")
    data = build_data(cfg_for(tmp_path), NOAUG, seed=0)
    assert data.val.ids == ["c7"] and len(data.train) == 5
    (tmp_path / "val.txt").write_text("c9\n")
    with pytest.raises(DataError, match=r"val\.txt.*c9"):
        build_data(cfg_for(tmp_path), NOAUG, seed=0)


def test_seeded_split_is_group_aware_and_deterministic(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for p in range(10):
        for s in range(3):
            Image.fromarray(_img(rng, 12, 12, 1)).save(tmp_path / "images" / f"p{p}_slice_{s}.png")
            Image.fromarray(_mask(rng, 12, 12)).save(tmp_path / "masks" / f"p{p}_slice_{s}.png")
    cfg = cfg_for(tmp_path, split={"val_fraction": 0.2, "test_fraction": 0.2, "seed": 3})
    a, b = build_data(cfg, NOAUG, seed=0), build_data(cfg, NOAUG, seed=1)
    assert a.splits == b.splits
    groups = {k: {i.split("_slice_")[0] for i in v} for k, v in a.splits.items()}
    assert len(groups["val"]) == 2 and len(groups["test"]) == 2 and len(groups["train"]) == 6
    assert not (groups["train"] & groups["val"]) and not (groups["train"] & groups["test"])
    assert sum(len(v) for v in a.splits.values()) == 30
    c = build_data(
        cfg_for(tmp_path, split={"val_fraction": 0.2, "test_fraction": 0.2, "seed": 4}), NOAUG, seed=0
    )
    assert c.splits != a.splits


def test_roi_folder(tmp_path):
    make_folder(tmp_path, n=3)
    (tmp_path / "fov").mkdir()
    fov = np.zeros((20, 24), np.uint8)
    fov[2:18, 3:20] = 255
    for k in range(3):
        Image.fromarray(fov).save(tmp_path / "fov" / f"c{k}.png")
    data = build_data(cfg_for(tmp_path, split={"val_fraction": 0.34}), NOAUG, seed=0)
    np.testing.assert_array_equal(data.val[0]["roi"].numpy(), fov > 0)
    s = build_data(cfg_for(tmp_path, size=(20, 24), split={"val_fraction": 0.34}), NOAUG, seed=0).train[0]
    np.testing.assert_array_equal(s["roi"].numpy(), fov > 0)
    assert build_data(cfg_for(tmp_path, roi_dir=None), NOAUG, seed=0).train[0]["roi"].all()
    (tmp_path / "fov" / "c1.png").unlink()
    with pytest.raises(DataError, match=r"c1\.png.*region-of-interest"):
        build_data(cfg_for(tmp_path), NOAUG, seed=0)


def test_channel_conversion_and_mixed_channels(tmp_path):
    make_folder(tmp_path, n=3, c=3)
    Image.fromarray(np.full((20, 24), 100, np.uint8)).save(tmp_path / "images" / "c1.png")  # now grey
    with pytest.raises(DataError, match=r"c1\.png.*1 channels.*in_channels"):
        build_data(cfg_for(tmp_path), NOAUG, seed=0)
    data = build_data(cfg_for(tmp_path, in_channels=3, normalize="none"), NOAUG, seed=0)
    case = open_cases(tmp_path / "images" / "c1.png", cfg=data.config)[0]
    assert case["image"].shape == (3, 20, 24)
    np.testing.assert_allclose(case["image"].numpy(), 100 / 255, atol=1e-6)
    grey = build_data(cfg_for(tmp_path, in_channels=1), NOAUG, seed=0)
    assert grey.in_channels == 1 and grey.train[0]["image"].shape[0] == 1


# --------------------------------------------------------------------------- bad input


def _expect(tmp_path, match, **kw):
    with pytest.raises(DataError, match=match) as e:
        build_data(cfg_for(tmp_path, **kw), NOAUG, seed=0)
    assert "\n" not in str(e.value)  # one line
    return str(e.value)


def test_bad_size_mismatch(tmp_path):
    make_folder(tmp_path, n=3)
    Image.fromarray(np.zeros((21, 24), np.uint8)).save(tmp_path / "masks" / "c2.png")
    msg = _expect(tmp_path, r"masks/c2\.png: mask size does not match image c2\.png")
    assert "24x21 vs 24x20" in msg


def test_bad_mask_values_outside_mapping(tmp_path):
    make_folder(tmp_path, n=3)
    m = _mask(np.random.default_rng(0), 20, 24)
    m[5, 5] = 7
    Image.fromarray(m).save(tmp_path / "masks" / "c1.png")
    _expect(
        tmp_path, r"masks/c1\.png: mask values \[7\] are not in the class mapping", mask_values={0: 0, 255: 1}
    )
    _expect(tmp_path, r"mask values .*7.* have no default class mapping")


def test_bad_missing_mask_and_orphan(tmp_path):
    make_folder(tmp_path, n=3)
    (tmp_path / "masks" / "c1.png").unlink()
    _expect(tmp_path, r"images/c1\.png: missing mask")
    Image.fromarray(np.zeros((20, 24), np.uint8)).save(tmp_path / "masks" / "c1.png")
    Image.fromarray(np.zeros((20, 24), np.uint8)).save(tmp_path / "masks" / "zz.png")
    _expect(tmp_path, r"masks/zz\.png: mask has no matching image")


def test_bad_truncated_and_unreadable(tmp_path):
    make_folder(tmp_path, n=3)
    p = tmp_path / "images" / "c1.png"
    p.write_bytes(p.read_bytes()[:200])
    _expect(tmp_path, r"images/c1\.png: cannot read image \(truncated")
    p.write_bytes(b"this is not a png")
    _expect(tmp_path, r"images/c1\.png: not a readable image")


def test_bad_empty_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    _expect(tmp_path, r"images: no images found")
    with pytest.raises(DataError, match="no such file"):
        build_data(cfg_for(tmp_path / "nope"), NOAUG, seed=0)


def test_bad_nan_intensities(tmp_path):
    import tifffile

    make_folder(tmp_path, n=3)
    (tmp_path / "images" / "c1.png").unlink()
    im = np.random.default_rng(0).random((20, 24)).astype(np.float32)
    im[3, 4] = np.nan
    tifffile.imwrite(tmp_path / "images" / "c1.tif", im)
    _expect(tmp_path, r"images/c1\.tif: contains 1 NaN or infinite values")
    h5dir = tmp_path / "h5"
    h5dir.mkdir()
    with h5py.File(h5dir / "a.h5", "w") as f:
        f["image"] = np.full((8, 8), np.inf, np.float32)
        f["label"] = np.zeros((8, 8), np.uint8)
    with pytest.raises(DataError, match=r"a\.h5: contains 64 NaN or infinite"):
        build_data(cfg_for(h5dir), NOAUG, seed=0)


def test_bad_h5_shapes_and_keys(tmp_path):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["image"] = np.zeros((8, 9), np.float32)
        f["label"] = np.zeros((8, 8), np.uint8)
    with pytest.raises(DataError, match=r"a\.h5: image shape \(8, 9\) does not match label shape \(8, 8\)"):
        build_data(cfg_for(tmp_path), NOAUG, seed=0)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["img_x"] = np.zeros((8, 8), np.float32)
    with pytest.raises(DataError, match=r"a\.h5: no 'image' array"):
        build_data(cfg_for(tmp_path), NOAUG, seed=0)
    (tmp_path / "a.h5").write_bytes(b"\x89HDF\r\n\x1a\n garbage")
    with pytest.raises(DataError, match=r"a\.h5: cannot open"):
        build_data(cfg_for(tmp_path), NOAUG, seed=0)


def test_config_rejects_unknown_and_inconsistent_keys():
    with pytest.raises(ValidationError, match="imagedir"):
        DataConfig(root="x", imagedir="images")
    with pytest.raises(ValidationError, match="mask_threshold"):
        DataConfig(root="x", mask_values={0: 0, 255: 1}, mask_threshold=128)
    with pytest.raises(ValidationError, match="root"):
        DataConfig()
    with pytest.raises(ValidationError):
        AugmentConfig(hflip=1.5)
    assert all(f.description for f in DataConfig.model_fields.values())
    assert all(f.description for f in AugmentConfig.model_fields.values())


# --------------------------------------------------------------------------- HDF5 / npz


def _acdc_like(root, rng):
    (root / "slices").mkdir(parents=True)
    (root / "volumes").mkdir()
    vols = {}
    for p in range(4):
        d = 3 + p
        img = rng.random((d, 16, 12)).astype(np.float32)
        lab = rng.integers(0, 4, (d, 16, 12)).astype(np.uint8)
        with h5py.File(root / "volumes" / f"patient{p}_frame01.h5", "w") as f:
            f.create_dataset("image", data=img, compression="gzip")
            f.create_dataset("label", data=lab, compression="gzip")
        vols[f"patient{p}_frame01"] = (img, lab)
        for z in range(d):
            with h5py.File(root / "slices" / f"patient{p}_frame01_slice_{z}.h5", "w") as f:
                f["image"], f["label"] = img[z], lab[z]
    return vols


def test_h5_slices_and_volumes(tmp_path):
    vols = _acdc_like(tmp_path, np.random.default_rng(0))
    (tmp_path / "train.txt").write_text(
        "\n".join(f"patient{p}_frame01_slice_{z}" for p in (0, 1, 2) for z in range(3 + p)) + "\n"
    )
    (tmp_path / "test.txt").write_text("patient3_frame01\n")
    data = build_data(cfg_for(tmp_path, normalize="none", split={"val_fraction": 0.34}), NOAUG, seed=0)
    assert data.num_classes == 4 and data.in_channels == 1 and data.volumetric
    assert len(data.train) + len(data.val) == 3 + 4 + 5
    case = data.test[0]
    img, lab = vols["patient3_frame01"]
    assert case["image"].shape == (6, 1, 16, 12) and case["mask"].shape == (6, 16, 12)
    np.testing.assert_array_equal(case["mask"].numpy(), lab)
    np.testing.assert_allclose(case["image"][:, 0].numpy(), img, atol=1e-6)  # float data kept by "none"
    assert case["display"].shape == (6, 16, 12, 3) and case["display"].dtype == np.uint8
    assert data.val[0]["image"].ndim == 3  # val slices carved from train.txt stay 2D


def test_h5_volumes_train_slice_wise(tmp_path):
    vols = _acdc_like(tmp_path, np.random.default_rng(1))
    import shutil

    shutil.rmtree(tmp_path / "slices")
    data = build_data(cfg_for(tmp_path, split={"val_fraction": 0.25}), NOAUG, seed=0)
    depth = {k: v[0].shape[0] for k, v in vols.items()}
    assert len(data.train) == sum(depth[i] for i in data.splits["train"])
    assert data.train[0]["image"].shape == (1, 16, 16)
    assert data.val[0]["image"].ndim == 4 and data.volumetric


def test_synapse_npz_and_test_vol_h5(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "train_npz").mkdir()
    (tmp_path / "test_vol_h5").mkdir()
    (tmp_path / "lists" / "lists_Synapse").mkdir(parents=True)
    names = []
    for c in range(2):
        for z in range(3):
            name = f"case000{c}_slice00{z}"
            np.savez(
                tmp_path / "train_npz" / f"{name}.npz",
                image=rng.random((16, 16)).astype(np.float32),
                label=rng.integers(0, 9, (16, 16)).astype(np.float32),
            )
            names.append(name)
    lab = rng.integers(0, 9, (4, 16, 16)).astype(np.float32)
    with h5py.File(tmp_path / "test_vol_h5" / "case0008.npy.h5", "w") as f:
        f["image"], f["label"] = rng.random((4, 16, 16)).astype(np.float32), lab
    (tmp_path / "lists" / "lists_Synapse" / "train.txt").write_text("\n".join(names) + "\n")
    (tmp_path / "lists" / "lists_Synapse" / "test_vol.txt").write_text("case0008\n")
    data = build_data(cfg_for(tmp_path, num_classes=9, split={"val_fraction": 0.0}), NOAUG, seed=0)
    assert data.num_classes == 9 and len(data.train) == 6 and data.test.ids == ["case0008"]
    np.testing.assert_array_equal(data.test[0]["mask"].numpy(), lab.astype(np.int64))
    assert data.train[3]["mask"].dtype == torch.int64


# --------------------------------------------------------------------------- NIfTI


def _nifti_case(root, cid, rng, shape=(12, 10, 5), zooms=(0.8, 0.9, 2.5), channels=None):
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(exist_ok=True)
    affine = np.diag([*zooms, 1.0])
    affine[:3, 3] = [10, -5, 3]
    lab = rng.integers(0, 3, shape).astype(np.uint8)
    imgs = []
    for ch in range(channels or 1):
        img = (rng.random(shape) * 1000 - 200).astype(np.float32)
        suffix = f"_{ch:04d}" if channels else ""
        nii = nib.Nifti1Image(img, affine)
        nii.header.set_zooms(zooms)
        nib.save(nii, str(root / "imagesTr" / f"{cid}{suffix}.nii.gz"))
        imgs.append(img)
    lnii = nib.Nifti1Image(lab, affine)
    nib.save(lnii, str(root / "labelsTr" / f"{cid}.nii.gz"))
    return imgs, lab, affine


def test_nifti_msd_layout_spacing_and_write_back(tmp_path):
    rng = np.random.default_rng(0)
    cases = {f"la_{k:03d}": _nifti_case(tmp_path, f"la_{k:03d}", rng) for k in range(3)}
    (tmp_path / "dataset.json").write_text('{"labels": {"0": "background", "1": "left", "2": "right"}}')
    data = build_data(cfg_for(tmp_path, split={"val_fraction": 0.34}), NOAUG, seed=0)
    assert data.class_names == ["background", "left", "right"] and data.volumetric
    assert len(data.train) == 2 * 5  # slice-wise training
    case = data.val[0]
    imgs, lab, affine = cases[case["id"]]
    assert case["spacing"] == pytest.approx((2.5, 0.9, 0.8))
    assert case["image"].shape == (5, 1, 10, 12)  # [z, C, y, x]
    np.testing.assert_array_equal(case["mask"].numpy(), lab.transpose(2, 1, 0))
    out = save_nifti_like(case["mask"].numpy(), case["geometry"], tmp_path / "pred" / "p.nii.gz")
    back = nib.load(str(out))
    np.testing.assert_array_equal(np.asarray(back.dataobj), lab)
    np.testing.assert_allclose(back.affine, affine)
    assert back.header.get_zooms()[:3] == pytest.approx((0.8, 0.9, 2.5))


def test_nifti_nnunet_channels_and_clip(tmp_path):
    rng = np.random.default_rng(1)
    c = {k: _nifti_case(tmp_path, f"case_{k}", rng, channels=2) for k in range(2)}
    cases = open_cases(tmp_path, cfg=DataConfig(root=tmp_path, intensity_clip=(0, 500), normalize="none"))
    assert cases[0]["image"].shape == (5, 2, 10, 12)
    ref = np.clip(c[0][0][1], 0, 500).transpose(2, 1, 0)
    np.testing.assert_allclose(cases[0]["image"][:, 1].numpy(), ref, rtol=1e-5, atol=1e-3)
    (tmp_path / "labelsTr" / "case_1.nii.gz").unlink()
    with pytest.raises(DataError, match=r"case_1_0000\.nii\.gz: missing label volume"):
        build_data(DataConfig(root=tmp_path), NOAUG, seed=0)


def test_nifti_truncated(tmp_path):
    rng = np.random.default_rng(2)
    for k in range(2):
        _nifti_case(tmp_path, f"x{k}", rng)
    p = tmp_path / "imagesTr" / "x1.nii.gz"
    p.write_bytes(p.read_bytes()[:300])
    with pytest.raises(DataError, match=r"x1\.nii\.gz: .*(truncated|corrupt)"):
        build_data(DataConfig(root=tmp_path), NOAUG, seed=0)


# --------------------------------------------------------------------------- open_cases, synthetic, targets


def test_open_cases_without_masks(tmp_path):
    _, masks = make_folder(tmp_path, n=3)
    flat = tmp_path / "images"
    cases = open_cases(flat)
    assert len(cases) == 3 and cases[0]["mask"] is None
    np.testing.assert_array_equal(open_cases(tmp_path)[0]["mask"].numpy(), masks["c0"] // 255)
    assert open_cases(tmp_path, masks=False)[0]["mask"] is None
    one = open_cases(flat / "c2.png")
    assert one.ids == ["c2"] and one[0]["image"].shape == (3, 20, 24)
    (tmp_path / "masks" / "c0.png").unlink()
    assert open_cases(tmp_path)[0]["mask"] is None  # optional for prediction
    with pytest.raises(DataError, match="missing mask"):
        open_cases(tmp_path, masks=True)


def test_synthetic_format_builds():
    data = build_data(
        DataConfig(format="synthetic", size=(32, 32), synthetic={"kind": "multiclass", "n": 6, "size": 32}),
        seed=0,
    )
    assert data.num_classes == 4 and data.in_channels == 1 and len(data.train) + len(data.val) == 6
    assert data.class_names == ["background", "organ", "ring", "core"]


def test_extra_targets_use_the_augmented_mask(tmp_path, monkeypatch):
    from medseg.data import edges

    monkeypatch.setattr(edges, "unet_weight_map", lambda m, w0=10.0, sigma=5.0: (m * w0).astype(np.float32))
    monkeypatch.setattr(edges, "edge_target", lambda m, width=1: (m * width).astype(np.float32))
    make_folder(tmp_path, n=3)
    data = build_data(
        cfg_for(tmp_path),
        AugmentConfig(affine=1.0, hflip=0.5),
        seed=0,
        extra_targets=("weight_map", "edge"),
        target_options={"weight_map": {"w0": 3.0}},
    )
    s = data.train[1]
    m = torch.where(s["roi"], s["mask"], 0).float()
    assert torch.equal(s["weight_map"], 3.0 * m) and torch.equal(s["edge"], m)
    with pytest.raises(ValueError, match="unknown extra targets"):
        build_data(cfg_for(tmp_path), seed=0, extra_targets=("distance",))


def test_cache_off_gives_the_same_samples(tmp_path):
    _acdc_like(tmp_path, np.random.default_rng(3))
    a = build_data(cfg_for(tmp_path), AugmentConfig(), seed=0)
    b = build_data(cfg_for(tmp_path, cache=False), AugmentConfig(), seed=0)
    assert a.splits == b.splits
    for i in (0, 1, 5):
        assert torch.equal(a.train[i]["image"], b.train[i]["image"])
        assert torch.equal(a.train[i]["mask"], b.train[i]["mask"])
    assert torch.equal(a.val[0]["image"], b.val[0]["image"])


def test_lazy_validation_reports_bad_files_on_access(tmp_path):
    make_folder(tmp_path, n=12)
    (tmp_path / "images" / "c9.png").write_bytes(b"nope")
    with pytest.raises(DataError, match=r"c9\.png"):
        build_data(cfg_for(tmp_path), NOAUG, seed=0)
    data = build_data(cfg_for(tmp_path, validate_on_load=False, split={"val_fraction": 0.0}), NOAUG, seed=0)
    k = data.train.ids.index("c9")
    with pytest.raises(DataError, match=r"c9\.png: not a readable image"):
        data.train[k]


def test_16bit_grey_and_rgba_images(tmp_path):
    make_folder(tmp_path, n=3, c=1)
    im16 = (np.arange(20 * 24).reshape(20, 24) * 100).astype(np.uint16)
    Image.fromarray(im16).save(tmp_path / "images" / "c0.png")
    case = open_cases(tmp_path / "images" / "c0.png", cfg=cfg_for(tmp_path, normalize="none"))[0]
    np.testing.assert_allclose(case["image"][0].numpy(), im16, rtol=1e-6)  # 16-bit values kept
    assert case["display"][..., 0].max() == 255 and case["display"][..., 0].min() == 0
    rgba = np.random.default_rng(0).integers(0, 256, (20, 24, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "x.png")
    case = open_cases(tmp_path / "x.png", cfg=cfg_for(tmp_path, normalize="none"))[0]
    np.testing.assert_allclose(case["image"].numpy(), rgba[..., :3].transpose(2, 0, 1) / 255, atol=1e-6)


def test_ssl4mis_layout_with_list_files(tmp_path):
    vols = _acdc_like(tmp_path / "tmp", np.random.default_rng(4))
    (tmp_path / "tmp" / "slices").rename(tmp_path / "tmp" / "volumes" / "slices")
    (tmp_path / "tmp" / "volumes").rename(tmp_path / "data")
    (tmp_path / "train_slices.list").write_text(
        "\n".join(f"patient0_frame01_slice_{z}" for z in range(3)) + "\n"
    )
    (tmp_path / "val.list").write_text("patient1_frame01\n")
    (tmp_path / "test.list").write_text("patient2_frame01\npatient3_frame01\n")
    data = build_data(cfg_for(tmp_path), NOAUG, seed=0)
    assert len(data.train) == 3 and data.val.ids == ["patient1_frame01"] and len(data.test) == 2
    assert data.val[0]["image"].shape[0] == vols["patient1_frame01"][0].shape[0]
