"""``medseg predict`` on volumes: read -> RAS -> (target spacing) -> predict_case -> back to the
input's own grid, written in its format with its exact affine, header spacing and shape.

An "identity model" (the prediction is the input image's own label values) makes the round trip
checkable voxel for voxel; nibabel / SimpleITK reading the files are the reference. A real
(tiny, untrained) checkpoint runs the same path through ``predict_case``.
"""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from medseg.cli import main
from medseg.config import load_config
from medseg.engine.checkpoint import save_checkpoint
from medseg.engine.distributed import Distributed
from medseg.engine.predict import LoadedCheckpoint
from medseg.engine.predictor import predict_folder
from medseg.engine.train_setup import build_parts

nib = pytest.importorskip("nibabel")

TINY = [
    "data.format=synthetic",
    "data.synthetic.n=8",
    "data.synthetic.size=32",
    "data.size=[32,32]",
    "data.in_channels=1",
    "model.options={depth: 2, base_width: 4}",
    "train.log_tensorboard=false",
]
# float intensities 0..3 reach the model unchanged (no z-score): the identity model reads them back
IDENTITY = ["data.normalize=none"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    parts = build_parts(load_config(None, TINY + [f"output_dir={out}"]), Distributed(), torch.device("cpu"))
    return save_checkpoint(out / "best.safetensors", parts.model, parts.model_state)


def _identity(self, case, **kw):
    image = case["image"].numpy()  # [D, C, H, W], intensities = label values
    return np.rint(image[:, 0]).astype(np.uint8), None


def _labels(shape=(14, 11, 6), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 4, (shape[0] // 2 + 1, shape[1] // 2 + 1, shape[2]))
    return np.repeat(np.repeat(coarse, 2, 0), 2, 1)[: shape[0], : shape[1]].astype(np.uint8)


def _affines() -> dict[str, np.ndarray]:
    c, s = np.cos(0.3), np.sin(0.3)
    oblique = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]) @ np.diag(
        [0.9, 0.8, 4.0, 1]
    )
    oblique[:3, 3] = [5, -7, 2]
    flipped = np.diag([-0.9, 0.8, -4.0, 1.0])
    flipped[:3, 3] = [30, -10, 40]
    permuted = np.zeros((4, 4))
    permuted[0, 2], permuted[1, 0], permuted[2, 1], permuted[3, 3] = -0.9, 4.0, 0.8, 1  # stored x is A
    return {"oblique": oblique, "flipped": flipped, "permuted": permuted}


@pytest.mark.parametrize("name", ["oblique", "flipped", "permuted"])
def test_identity_prediction_comes_back_voxel_for_voxel(name, checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(LoadedCheckpoint, "predict", _identity)
    lab, aff = _labels(), _affines()[name]
    (tmp_path / "in").mkdir()
    src = tmp_path / "in" / "case.nii.gz"
    nib.save(nib.Nifti1Image(lab.astype(np.float32), aff), str(src))
    predict_folder(checkpoint, src, tmp_path / "out", overrides=IDENTITY, device="cpu", overlays=False)
    out = tmp_path / "out" / "masks" / "case.nii.gz"
    back, ref = nib.load(str(out)), nib.load(str(src))
    np.testing.assert_array_equal(np.asarray(back.dataobj), lab)
    np.testing.assert_allclose(back.affine, ref.affine, atol=1e-6)
    assert back.shape == ref.shape
    assert back.header.get_zooms() == pytest.approx(ref.header.get_zooms())
    with gzip.open(out) as fh:  # .nii.gz in, .nii.gz out
        assert fh.read(348)[344:348] == b"n+1\x00"


def test_identity_prediction_through_a_target_spacing(checkpoint, tmp_path, monkeypatch):
    x, y, z = np.meshgrid(np.arange(14), np.arange(11), np.arange(6), indexing="ij")
    lab = ((x >= 7).astype(np.uint8) + 2 * (y >= 5) + (z >= 4)).astype(np.uint8)  # quadrants, 0..4
    aff = _affines()["permuted"]
    src = tmp_path / "case.nii.gz"
    nib.save(nib.Nifti1Image(lab.astype(np.float32), aff), str(src))
    seen = []

    def spy(self, case, **kw):
        seen.append(tuple(case["image"].shape))
        return _identity(self, case)

    monkeypatch.setattr(LoadedCheckpoint, "predict", spy)
    over = IDENTITY + ["data.target_spacing=[2.0,0.4,0.45]"]
    predict_folder(checkpoint, src, tmp_path / "out", overrides=over, device="cpu", overlays=False)
    # stored x runs along A (4 mm), y along S (0.8 mm), z along R (0.9 mm): sliced along A, the
    # case order is [A, S, R], and the model sees 14*4/2, 11*0.8/0.4 and 6*0.9/0.45 voxels
    assert seen == [(28, 1, 22, 12)]
    back = nib.load(str(tmp_path / "out" / "masks" / "case.nii.gz"))
    assert back.shape == lab.shape
    np.testing.assert_allclose(back.affine, aff, atol=1e-6)
    # the cubic resampling of the image blurs only the class borders of this identity "model"
    assert (np.asarray(back.dataobj) == lab).mean() > 0.95


@pytest.mark.data
def test_acdc_volume_identity_round_trip(checkpoint, tmp_path, real_data, monkeypatch):
    """A real ACDC volume (affine scale 1, spacing in pixdim): the identity prediction of its own
    label comes back equal, with the file's own affine and pixdim."""
    monkeypatch.setattr(LoadedCheckpoint, "predict", _identity)
    src = real_data("acdc-nifti") / "testing/patient101/patient101_frame01_gt.nii.gz"
    ref = nib.load(str(src))
    lab = np.asarray(ref.dataobj)
    img = nib.Nifti1Image(lab.astype(np.float32), ref.affine, header=ref.header)
    img.set_data_dtype(np.float32)
    nib.save(img, str(tmp_path / "p101.nii.gz"))
    with pytest.warns(UserWarning, match="pixdim"):
        predict_folder(
            checkpoint,
            tmp_path / "p101.nii.gz",
            tmp_path / "out",
            overrides=IDENTITY,
            device="cpu",
            overlays=False,
        )
    back = nib.load(str(tmp_path / "out" / "masks" / "p101.nii.gz"))
    np.testing.assert_array_equal(np.asarray(back.dataobj), lab)
    assert back.affine.tolist() == ref.affine.tolist()
    assert back.header.get_zooms() == ref.header.get_zooms()


def test_real_checkpoint_predicts_a_volume_in_its_own_grid(checkpoint, tmp_path):
    lab, aff = _labels(), _affines()["oblique"]
    src = tmp_path / "case.nii.gz"
    nib.save(nib.Nifti1Image(lab.astype(np.float32) * 100, aff), str(src))
    written = predict_folder(checkpoint, src, tmp_path / "out", device="cpu", overlays=False)
    assert written["count"] == 1
    back = nib.load(str(tmp_path / "out" / "masks" / "case.nii.gz"))
    assert back.shape == lab.shape and back.get_data_dtype() == np.uint8
    np.testing.assert_allclose(back.affine, aff, atol=1e-6)
    assert set(np.unique(np.asarray(back.dataobj))) <= {0, 1}


@pytest.mark.parametrize("ext", [".mha", ".nrrd"])
def test_itk_input_is_written_back_in_its_format(ext, checkpoint, tmp_path, monkeypatch):
    sitk = pytest.importorskip("SimpleITK")
    monkeypatch.setattr(LoadedCheckpoint, "predict", _identity)
    lab = _labels()  # x, y, z
    img = sitk.GetImageFromArray(lab.transpose(2, 1, 0).astype(np.float32))
    img.SetSpacing((0.9, 0.8, 4.0))
    img.SetOrigin((3.0, -2.0, 11.0))
    img.SetDirection((0, 1, 0, -1, 0, 0, 0, 0, 1))  # rotated in-plane: stored x runs along -y (LPS)
    sitk.WriteImage(img, str(tmp_path / f"case{ext}"))
    predict_folder(
        checkpoint,
        tmp_path / f"case{ext}",
        tmp_path / "out",
        overrides=IDENTITY,
        device="cpu",
        overlays=False,
    )
    back = sitk.ReadImage(str(tmp_path / "out" / "masks" / f"case{ext}"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), lab.transpose(2, 1, 0))
    assert back.GetSpacing() == pytest.approx(img.GetSpacing())
    assert back.GetOrigin() == pytest.approx(img.GetOrigin())
    assert back.GetDirection() == pytest.approx(img.GetDirection())


# --------------------------------------------------------------------------- bad volumes


def _patched(src, dst, offset: int, values) -> None:
    """Copy a .nii.gz with float32 header fields at ``offset`` overwritten (nibabel itself would
    repair them on save)."""
    raw = bytearray(gzip.decompress(src.read_bytes()))
    raw[offset : offset + 4 * len(values)] = np.asarray(values, "<f4").tobytes()
    dst.write_bytes(gzip.compress(bytes(raw)))


def _bad_volumes(tmp_path):
    lab = _labels()
    good = tmp_path / "good.nii.gz"
    nib.save(nib.Nifti1Image(lab.astype(np.float32), np.diag([1.0, 1.0, 3.0, 1.0])), str(good))
    raw = good.read_bytes()
    (tmp_path / "truncated.nii.gz").write_bytes(raw[: len(raw) // 2])
    _patched(good, tmp_path / "nan_affine.nii.gz", 292, [np.nan])  # srow_x[3]
    _patched(good, tmp_path / "zero_spacing.nii.gz", 84, [0.0])  # pixdim[2]
    _patched(tmp_path / "zero_spacing.nii.gz", tmp_path / "zero_spacing.nii.gz", 300, [0.0])  # srow_y[1]
    nib.save(
        nib.Nifti1Image(np.zeros((4, 4, 3, 2, 2), np.float32), np.eye(4)), str(tmp_path / "five_d.nii.gz")
    )
    return {
        "truncated": "truncated or corrupt",
        "nan_affine": "non-finite",
        "zero_spacing": "spacing",
        "five_d": "dimensions",
    }


def test_bad_volumes_are_one_line_and_write_nothing(checkpoint, tmp_path, capsys):
    for name, problem in _bad_volumes(tmp_path).items():
        out = tmp_path / f"out_{name}"
        rc = main(
            [
                "predict",
                str(checkpoint),
                str(tmp_path / f"{name}.nii.gz"),
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        err = capsys.readouterr().err
        assert rc != 0, name
        lines = [line for line in err.splitlines() if "error" in line.lower()]
        assert len(lines) == 1 and f"{name}.nii.gz" in lines[0] and problem in lines[0], (name, err)
        assert "Traceback" not in err
        masks = out / "masks"
        assert not masks.exists() or not any(masks.iterdir()), name


def test_4d_label_where_3d_expected_is_one_error(tmp_path):
    from medseg.data.nifti import read_nifti_label
    from medseg.errors import DataError

    path = tmp_path / "lab4d.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3, 2), np.uint8), np.eye(4)), str(path))
    with pytest.raises(DataError, match=r"lab4d\.nii\.gz: label volume must be 3D"):
        read_nifti_label(path)


def test_dicom_series_is_predicted_and_written_as_nifti_with_its_geometry(checkpoint, tmp_path, monkeypatch):
    sitk = pytest.importorskip("SimpleITK")
    from tests.data.test_itk_io import _dicom_series

    monkeypatch.setattr(LoadedCheckpoint, "predict", _identity)
    lab = _labels((6, 5, 4)).transpose(2, 1, 0)  # [z, y, x] slices
    _dicom_series(tmp_path / "series", lab)
    written = predict_folder(
        checkpoint, tmp_path / "series", tmp_path / "out", overrides=IDENTITY, device="cpu", overlays=False
    )
    assert any("written as NIfTI" in n for n in written["notes"])
    out = tmp_path / "out" / "masks" / "series.nii.gz"
    ref = sitk.ReadImage(str(out))  # SimpleITK reads the NIfTI back in the series' own LPS geometry
    series = sitk.ReadImage(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path / "series")))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ref), lab)
    assert ref.GetSpacing() == pytest.approx(series.GetSpacing())
    assert ref.GetOrigin() == pytest.approx(series.GetOrigin(), abs=1e-4)
    assert ref.GetDirection() == pytest.approx(series.GetDirection())


# --------------------------------------------------------------------------- score


def test_score_uses_nifti_spacing_and_refuses_another_grid(tmp_path, capsys):
    lab = _labels()
    aff = _affines()["flipped"]
    for folder in ("ref", "pred"):
        (tmp_path / folder).mkdir()
    nib.save(nib.Nifti1Image(lab, aff), str(tmp_path / "ref" / "a.nii.gz"))
    nib.save(nib.Nifti1Image(lab, aff), str(tmp_path / "pred" / "a.nii.gz"))
    assert main(["score", str(tmp_path / "pred"), str(tmp_path / "ref"), "--out", str(tmp_path / "s1")]) == 0
    capsys.readouterr()
    moved = aff.copy()
    moved[2, 3] += 4.0  # one slice further: same shape, another grid
    nib.save(nib.Nifti1Image(lab, moved), str(tmp_path / "pred" / "a.nii.gz"))
    assert main(["score", str(tmp_path / "pred"), str(tmp_path / "ref"), "--out", str(tmp_path / "s2")]) != 0
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "pred/a.nii.gz" in err[0] and "ref/a.nii.gz" in err[0] and "affine" in err[0]
