"""``medseg info`` shows, per volume case, the axis 2D models slice along and the spacing it was
chosen from (issue #12: largest spacing, ties the first RAS axis, ``data.slice_axis`` overrides)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medseg.cli import main
from medseg.cli_output import table_rows
from medseg.data import DataConfig, fingerprint, fingerprint_table
from medseg.data.synthetic import write_box_volumes

nib = pytest.importorskip("nibabel")

SHAPE_XYZ = (8, 6, 4)


def _nnunet(root, cases: dict[str, tuple[float, float, float]]):
    """imagesTr/ + labelsTr/ volumes with diagonal (RAS) affines of the given (x, y, z) spacing."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for cid, zooms in cases.items():
        aff = np.diag([*zooms, 1.0])
        lab = np.zeros(SHAPE_XYZ, np.uint8)
        lab[2:5, 1:4, 1:3] = 1
        nib.save(nib.Nifti1Image(lab.astype(np.float32), aff), str(root / "imagesTr" / f"{cid}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, aff), str(root / "labelsTr" / f"{cid}.nii.gz"))
    return root


def _rows(fp) -> dict[str, str]:
    return {k: v for k, v in table_rows(fingerprint_table(fp)) if k.startswith("slice axis")}


def test_each_case_is_sliced_along_its_largest_spacing_and_info_says_so(tmp_path):
    root = _nnunet(tmp_path, {"axial": (1.0, 1.0, 6.0), "sagittal": (5.0, 1.2, 1.2), "iso": (2.0, 2.0, 2.0)})
    fp = fingerprint(root)
    by_case = {e["case"]: e for e in fp["slice_axes"]}
    assert by_case["axial"] == {
        "case": "axial",
        "slice_axis": "S",
        "plane": "axial",
        "spacing": pytest.approx([1.0, 1.0, 6.0]),
        "spacing_axes": "RAS",
        "chosen_by": "largest spacing",
    }
    assert (by_case["sagittal"]["slice_axis"], by_case["sagittal"]["plane"]) == ("R", "sagittal")
    assert by_case["iso"]["slice_axis"] == "R" and by_case["iso"]["chosen_by"].startswith("tie")
    # the depth the fingerprint reports is the number of slices along that axis: z 4, x 8, x 8
    assert sorted(s[0] for s in fp["case_shapes"]) == [4, 8, 8]
    rows = _rows(fp)
    assert rows["slice axis axial"] == "S (axial), spacing R 1 x A 1 x S 6 mm: largest spacing"
    assert rows["slice axis sagittal"] == "R (sagittal), spacing R 5 x A 1.2 x S 1.2 mm: largest spacing"


def test_data_slice_axis_overrides_the_choice_and_is_named(tmp_path):
    root = _nnunet(tmp_path, {"a": (5.0, 1.2, 1.2)})
    fp = fingerprint(DataConfig(root=root, slice_axis="axial"))
    (entry,) = fp["slice_axes"]
    assert entry["slice_axis"] == "S" and entry["chosen_by"] == "data.slice_axis=axial"
    assert entry["spacing"] == pytest.approx([5.0, 1.2, 1.2])
    assert fp["case_shapes"] == [[4, 6, 8]]  # 4 axial slices of 6 x 8 (A x R)


def test_volumes_without_orientation_slice_their_first_array_axis(tmp_path):
    root = write_box_volumes(tmp_path / "h5", n=1, shape=(5, 12, 10))
    fp = fingerprint(root)
    (entry,) = fp["slice_axes"]
    assert entry["slice_axis"] == "0" and entry["plane"] is None and entry["spacing_axes"] == "array"
    assert _rows(fp)["slice axis case0_frame01"].startswith("array axis 0")


def test_2d_datasets_have_no_slice_axis(tmp_path):
    from medseg.data import write_synthetic_dataset

    fp = fingerprint(write_synthetic_dataset(tmp_path / "d", "binary", n=2, size=16, seed=0))
    assert fp["slice_axes"] == [] and _rows(fp) == {}


def test_info_prints_plain_rows_and_json_on_stdout(tmp_path, capsys):
    root = _nnunet(tmp_path, {"a": (1.0, 1.0, 6.0)})
    assert main(["info", str(root), "--set", "data.slice_axis=coronal"]) == 0
    out = capsys.readouterr().out
    assert "slice axis a\tA (coronal), spacing R 1 x A 1 x S 6 mm: data.slice_axis=coronal\n" in out
    assert main(["info", str(root), "--json", "-"]) == 0
    captured = capsys.readouterr()
    fp = json.loads(captured.out)  # stdout is the fingerprint alone
    assert fp["slice_axes"][0]["slice_axis"] == "S" and not (tmp_path / "-").exists()
