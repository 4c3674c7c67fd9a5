"""Discovery of the original ACDC NIfTI layout: one folder per patient, each label next to its
image as ``IMAGE_gt.nii.gz``, a 4-D cine file and ``Info.cfg`` that are not cases. The files
mimic ACDC's header (unit-scale sform, true spacing in pixdim: medseg.data.geometry.affine)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from medseg.data import DataConfig, open_cases
from medseg.data.discovery import detect_format, discover
from medseg.data.fingerprint import fingerprint
from medseg.data.geometry.affine import GeometryWarning, reset_warning
from medseg.errors import DataError

nib = pytest.importorskip("nibabel")
pytestmark = pytest.mark.filterwarnings("ignore::medseg.data.geometry.affine.GeometryWarning")

SHAPE_XYZ = (6, 5, 3)  # x, y and 3 thick slices along z
ZOOMS = (1.5, 1.5, 8.0)
SFORM = np.diag([-1.0, -1.0, 1.0, 1.0])  # ACDC's: unit scale, the true spacing only in pixdim


@pytest.fixture(autouse=True)
def _fresh_warning():
    reset_warning()
    yield
    reset_warning()


def _save(arr: np.ndarray, path) -> None:
    img = nib.Nifti1Image(arr, SFORM)
    img.header.set_zooms(ZOOMS + (1.0,) * (arr.ndim - 3))
    nib.save(img, str(path))


def _acdc_tree(root, patients=(1, 2), frames=(1, 7), cine=True):
    """patientNNN/patientNNN_frameXX(_gt).nii.gz, patientNNN_4d.nii.gz and Info.cfg under root;
    returns each case's label array (label value = patient * 10 + frame, so pairs are checkable)."""
    labels = {}
    for p in patients:
        folder = root / f"patient{p:03d}"
        folder.mkdir(parents=True)
        (folder / "Info.cfg").write_text("ED: 1\nES: 7\nGroup: NOR\n")
        for f in frames:
            cid = f"patient{p:03d}_frame{f:02d}"
            lab = np.zeros(SHAPE_XYZ, np.uint8)
            lab[1:4, 1:3, f % 3] = p * 10 + f
            _save((lab * 3.0 + 1.0).astype(np.float32), folder / f"{cid}.nii.gz")
            _save(lab, folder / f"{cid}_gt.nii.gz")
            labels[cid] = lab
        if cine:
            _save(np.ones((*SHAPE_XYZ, 4), np.float32), folder / f"patient{p:03d}_4d.nii.gz")
    return labels


def test_per_patient_folders_pair_each_image_with_its_gt_and_skip_the_cine(tmp_path):
    labels = _acdc_tree(tmp_path)
    assert detect_format(tmp_path) == "nifti"
    with pytest.warns(
        UserWarning, match=r"skipped 2 4-D volume\(s\) without a _gt label, e\.g\. patient001_4d"
    ):
        recs, _, fmt = discover(DataConfig(root=tmp_path), require_masks=True)
    assert fmt == "nifti" and sorted(r.id for r in recs) == sorted(labels)
    for r in recs:
        assert r.image[0].name == f"{r.id}.nii.gz" and r.mask is not None
        assert r.mask.name == f"{r.id}_gt.nii.gz" and r.mask.parent == r.image[0].parent
        assert r.depth == 3  # slices along z, the pixdim spacing of 8 mm (the affine says 1 mm)


def test_cases_of_the_layout_load_with_their_own_label_and_pixdim_spacing(tmp_path):
    labels = _acdc_tree(tmp_path, patients=(1,), frames=(1,))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        case = open_cases(tmp_path, cfg=DataConfig(root=tmp_path, normalize="none"))[0]
    assert sum("4-D" in str(w.message) for w in caught) == 1  # one line for the skipped cine file
    assert any(issubclass(w.category, GeometryWarning) for w in caught)  # the affine/pixdim rule
    assert case["spacing"] == pytest.approx((8.0, 1.5, 1.5))
    # the case layout is [S, A, R]; the sform flips x and y (diag(-1, -1, 1))
    expected = labels["patient001_frame01"][::-1, ::-1, :].transpose(2, 1, 0)
    np.testing.assert_array_equal(case["mask"].numpy() > 0, expected > 0)
    assert case["mask"].numpy().sum() == (expected > 0).sum() * int(case["mask"].max())


def test_a_single_patient_folder_is_its_two_labelled_frames(tmp_path):
    labels = _acdc_tree(tmp_path, patients=(3,))
    with pytest.warns(UserWarning, match="skipped 1 4-D"):
        fp = fingerprint(tmp_path / "patient003")
    assert fp["num_cases"] == 2 and fp["num_labelled"] == 2 and fp["num_volumes"] == 2
    assert fp["mask_values"] == sorted({0, *(int(v.max()) for v in labels.values())})


def test_image_without_gt_is_an_error_when_masks_are_required_and_a_case_otherwise(tmp_path):
    _acdc_tree(tmp_path, cine=False)
    extra = tmp_path / "patient002" / "patient002_frame09.nii.gz"
    _save(np.ones(SHAPE_XYZ, np.float32), extra)
    with pytest.raises(
        DataError, match=r"patient002_frame09\.nii\.gz: missing label volume \(no patient002_frame09_gt"
    ):
        discover(DataConfig(root=tmp_path), require_masks=True)
    recs, _, _ = discover(DataConfig(root=tmp_path), require_masks=False)
    assert {r.id: r.mask for r in recs}["patient002_frame09"] is None and len(recs) == 5


def test_label_without_image_is_an_error_naming_it(tmp_path):
    _acdc_tree(tmp_path, cine=False)
    (tmp_path / "patient001" / "patient001_frame07.nii.gz").unlink()
    with pytest.raises(DataError, match=r"patient001_frame07_gt\.nii\.gz: label has no image"):
        discover(DataConfig(root=tmp_path), require_masks=True)


def test_custom_label_suffix_through_mask_suffix(tmp_path):
    for cid in ("a", "b"):
        _save(np.zeros(SHAPE_XYZ, np.float32), tmp_path / f"{cid}.nii.gz")
        _save(np.zeros(SHAPE_XYZ, np.uint8), tmp_path / f"{cid}_seg.nii.gz")
    recs, _, _ = discover(DataConfig(root=tmp_path, mask_suffix="_seg"), require_masks=True)
    assert [(r.id, r.mask.name if r.mask else None) for r in recs] == [
        ("a", "a_seg.nii.gz"),
        ("b", "b_seg.nii.gz"),
    ]


def test_flat_and_nnunet_layouts_are_unchanged(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for cid in ("x1", "x2"):
        _save(np.zeros(SHAPE_XYZ, np.float32), flat / f"{cid}.nii.gz")
    (flat / "ignored").mkdir()  # a subfolder of a folder with volumes of its own is not searched
    _save(np.zeros(SHAPE_XYZ, np.float32), flat / "ignored" / "y.nii.gz")
    recs, _, _ = discover(DataConfig(root=flat), require_masks=False)
    assert [(r.id, r.mask) for r in recs] == [("x1", None), ("x2", None)]
    nn = tmp_path / "nn"
    (nn / "imagesTr").mkdir(parents=True)
    (nn / "labelsTr").mkdir()
    for cid in ("c1", "c2"):  # a 4-D multi-channel image with its label in labelsTr/ is a case
        _save(np.zeros((*SHAPE_XYZ, 2), np.float32), nn / "imagesTr" / f"{cid}.nii.gz")
        _save(np.zeros(SHAPE_XYZ, np.uint8), nn / "labelsTr" / f"{cid}.nii.gz")
    recs, _, _ = discover(DataConfig(root=nn), require_masks=True)
    assert [(r.id, r.mask.name if r.mask else None) for r in recs] == [
        ("c1", "c1.nii.gz"),
        ("c2", "c2.nii.gz"),
    ]


@pytest.mark.data
def test_real_acdc_testing_folder_is_discovered_from_headers(real_data):
    root = real_data("acdc-nifti") / "testing"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeometryWarning)
        recs, _, fmt = discover(DataConfig(root=root), require_masks=True)
    assert fmt == "nifti" and len(recs) == 80  # SOURCE.md: 40 patients, 80 image/label pairs
    assert all(r.mask is not None and r.mask.name == f"{r.id}_gt.nii.gz" for r in recs)
    assert all(r.id.rsplit("_frame", 1)[0] == r.image[0].parent.name for r in recs)
    # SOURCE.md: 852 slices over the 80 volumes, Z 6-21: the slice axis is z (pixdim 5-10 mm)
    assert sum(r.depth or 0 for r in recs) == 852 and min(r.depth or 0 for r in recs) == 6


def test_a_folder_of_patient_folders_is_searched_two_levels_down(tmp_path):
    # ACDC as distributed: database/{training,testing}/patientNNN/ (the shared copy: acdc-nifti/testing/)
    labels = _acdc_tree(tmp_path / "testing", patients=(1, 2), cine=False)
    (tmp_path / "SOURCE.md").write_text("not a case")
    assert detect_format(tmp_path) == "nifti"
    recs, _, fmt = discover(DataConfig(root=tmp_path), require_masks=True)
    assert fmt == "nifti" and sorted(r.id for r in recs) == sorted(labels)
    assert all(r.mask is not None and r.mask.name == f"{r.id}_gt.nii.gz" for r in recs)


def test_a_folder_without_volumes_at_any_level_is_one_clear_error(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="cannot tell the dataset format"):
        detect_format(tmp_path)


@pytest.mark.data
def test_real_acdc_nifti_root_is_discovered_through_testing(real_data):
    root = real_data("acdc-nifti")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeometryWarning)
        recs, _, fmt = discover(DataConfig(root=root), require_masks=True)
    assert fmt == "nifti" and len(recs) == 80  # SOURCE.md: 40 patients, 80 image/label pairs
