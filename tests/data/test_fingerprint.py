"""Dataset fingerprint: counts, sizes, class frequencies and spacing against direct computation."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from medseg.data import DataConfig, fingerprint, fingerprint_table, save_fingerprint, write_synthetic_dataset
from medseg.data.synthetic import generate_dataset


def test_fingerprint_of_a_folder_dataset(tmp_path):
    root = write_synthetic_dataset(tmp_path / "d", "multiclass", n=6, size=32, seed=1)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / "masks" / "case_005.png")  # one empty mask
    fp = fingerprint(root)
    _, masks, _ = generate_dataset("multiclass", 6, 32, seed=1)
    masks[5] = np.zeros((32, 32), np.uint8)
    counts = np.bincount(np.concatenate([m.ravel() for m in masks]), minlength=4)
    assert fp["format"] == "folder" and fp["num_cases"] == 6 and fp["num_labelled"] == 6
    assert fp["class_names"] == ["background", "organ", "ring", "core"] and fp["num_classes"] == 4
    for k, name in enumerate(fp["class_names"]):
        assert fp["class_frequency"][name] == pytest.approx(counts[k] / counts.sum())
    assert fp["class_presence"]["core"] == 5
    assert fp["empty_masks"] == 1 and fp["empty_mask_ids"] == ["case_005"]
    assert fp["size"]["height"] == {"min": 32, "median": 32, "max": 32}
    assert fp["channels"] == {"1": 6} and fp["mask_values"] == [0, 1, 2, 3]
    assert fp["split"]["train"] + fp["split"]["val"] + fp["split"]["test"] == 6
    assert fp["spacing"] is None and fp["problems"] == []
    json.loads(json.dumps(fp))
    path = save_fingerprint(fp, tmp_path / "out" / "fingerprint.json")
    assert json.loads(path.read_text())["num_cases"] == 6
    console = Console(record=True, width=200)
    console.print(fingerprint_table(fp))
    text = console.export_text()
    assert "6 (6 with masks)" in text and "ring" in text


def test_fingerprint_lists_problems_instead_of_failing(tmp_path):
    root = write_synthetic_dataset(tmp_path / "d", "binary", n=4, size=24, seed=0)
    (root / "images" / "case_001.png").write_bytes(b"garbage")
    m = np.asarray(Image.open(root / "masks" / "case_002.png")).copy()
    m[0, 0] = 77
    Image.fromarray(m).save(root / "masks" / "case_002.png")
    fp = fingerprint(root)
    assert any("case_001.png" in p for p in fp["problems"])
    assert any("case_002.png" in p and "77" in p for p in fp["problems"])
    assert fp["class_frequency"] is None  # no default mapping for {0, 77, 255}
    fp = fingerprint(DataConfig(root=root, mask_values={0: 0, 77: 0, 255: 1}))
    assert len(fp["problems"]) == 1  # the unreadable image; its case is left out of the statistics
    readable = [np.asarray(Image.open(root / "masks" / f"case_00{k}.png")) for k in (0, 2, 3)]
    lesion = sum(int((m == 255).sum()) for m in readable) / sum(m.size for m in readable)
    assert fp["class_frequency"] == pytest.approx({"background": 1 - lesion, "lesion": lesion})


def test_fingerprint_nifti_spacing_and_depth(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    for k, (depth, zooms) in enumerate([(4, (0.7, 0.7, 3.0)), (6, (0.8, 0.8, 2.0))]):
        aff = np.diag([*zooms, 1.0])
        nib.save(
            nib.Nifti1Image(rng.random((10, 8, depth)).astype(np.float32), aff),
            str(tmp_path / "imagesTr" / f"c{k}.nii.gz"),
        )
        nib.save(
            nib.Nifti1Image(rng.integers(0, 2, (10, 8, depth)).astype(np.uint8), aff),
            str(tmp_path / "labelsTr" / f"c{k}.nii.gz"),
        )
    fp = fingerprint(tmp_path)
    assert fp["format"] == "nifti" and fp["num_volumes"] == 2 and fp["num_slices"] == 10
    assert fp["size"]["depth"] == {"min": 4, "median": 5, "max": 6}
    assert fp["spacing"]["min"] == pytest.approx([2.0, 0.7, 0.7])
    assert fp["spacing"]["max"] == pytest.approx([3.0, 0.8, 0.8])
    assert fp["size"]["height"]["max"] == 8 and fp["size"]["width"]["max"] == 10


def test_fingerprint_of_synthetic_config():
    fp = fingerprint(DataConfig(format="synthetic", synthetic={"kind": "binary", "n": 5, "size": 24}))
    assert (
        fp["num_cases"] == 5 and fp["class_names"] == ["background", "lesion"] and fp["channels"] == {"3": 5}
    )


def test_class_thickness_is_twice_area_over_contour(tmp_path):
    """A 4-pixel-wide vertical band across a 20 x 20 image: area 80, contour 2 x 20 pixels
    (the band's two edge columns) -> thickness 4; the background's contour is the two columns
    next to the band (40 px), area 320 -> 16."""
    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    mask = np.zeros((20, 20), np.uint8)
    mask[:, 8:12] = 255
    Image.fromarray(np.full((20, 20), 100, np.uint8)).save(root / "images" / "a.png")
    Image.fromarray(mask).save(root / "masks" / "a.png")
    fp = fingerprint(root)
    assert fp["class_thickness"] == pytest.approx({"background": 16.0, "foreground": 4.0})
