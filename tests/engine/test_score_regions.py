"""``medseg score`` on region-based (multilabel) tasks: overlapping regions scored as the union of
their labels, checked against a plain numpy/scipy computation and against ``medseg evaluate``."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from PIL import Image
from scipy.ndimage import binary_erosion, generate_binary_structure
from scipy.spatial.distance import cdist

from medseg.cli import main
from medseg.engine.score import score_folders
from medseg.engine.score_regions import resolve_regions
from medseg.errors import ConfigError, DataError

BRATS = {"whole": [1, 2, 3], "core": [2, 3], "enhancing": [3]}


# ------------------------------------------------------------------ independent reference


def _dice(p: np.ndarray, r: np.ndarray) -> float:
    return 2 * np.logical_and(p, r).sum() / (p.sum() + r.sum())


def _surface_points(mask: np.ndarray, spacing) -> np.ndarray:
    """Boundary voxels (mask minus its erosion by the face-connected cross, outside = background)
    as physical coordinates."""
    padded = np.pad(mask, 1)
    inner = binary_erosion(padded, generate_binary_structure(mask.ndim, 1))[(slice(1, -1),) * mask.ndim]
    return np.argwhere(mask & ~inner) * np.asarray(spacing, float)


def _hd95(p: np.ndarray, r: np.ndarray, spacing, combine: str = "max") -> float:
    """HD95 by brute force over all boundary pairs (cdist)."""
    a, b = _surface_points(p, spacing), _surface_points(r, spacing)
    d = cdist(a, b)
    pr, rp = d.min(1), d.min(0)
    if combine == "pooled":
        return float(np.percentile(np.concatenate([pr, rp]), 95))
    return max(float(np.percentile(pr, 95)), float(np.percentile(rp, 95)))


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path)


def _nested(rng, shape, centre_jitter=0) -> np.ndarray:
    """Three nested blobs: label 1 outside, 2 inside it, 3 innermost (BraTS-like nesting)."""
    grid = np.indices(shape).astype(float)
    centre = np.array(shape) / 2 + rng.integers(-centre_jitter, centre_jitter + 1, len(shape))
    r = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre)))
    outer = rng.uniform(0.25, 0.35) * min(shape)
    label = np.zeros(shape, np.uint8)
    for k, frac in ((1, 1.0), (2, 0.6), (3, 0.3)):
        label[r < outer * frac] = k
    return label


def _pairs_2d(root: Path, n: int = 4, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n):
        ref = _nested(rng, (40, 44))
        pred = _nested(rng, (40, 44), centre_jitter=3)
        pred[1:3, 1:4] = 3  # a stray enhancing blob: counts in all three regions
        _png(root / "gt" / f"c{i}.png", ref)
        _png(root / "pred" / f"c{i}.png", pred)
        out[f"c{i}"] = (pred, ref)
    return out


# ------------------------------------------------------------------ scoring


@pytest.mark.parametrize("combine", ["max", "pooled"])
def test_region_dice_and_hd95_equal_a_numpy_computation(tmp_path, combine):
    cases = _pairs_2d(tmp_path)
    res = score_folders(
        tmp_path / "pred", tmp_path / "gt", tmp_path / "out", regions=BRATS, hd_combine=combine, plots=False
    )
    got = {(r["case"], r["class"]): r for r in res["records"]}
    assert len(got) == 12
    for case, (pred, ref) in cases.items():
        for name, labels in BRATS.items():
            p, r = np.isin(pred, labels), np.isin(ref, labels)
            assert got[(case, name)]["dice"] == pytest.approx(_dice(p, r))
            assert got[(case, name)]["hd95"] == pytest.approx(_hd95(p, r, (1, 1), combine))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["meta"]["regions"] == BRATS and summary["meta"]["hd_combine"] == combine
    assert summary["meta"]["scored"].startswith("per region")
    assert set(summary["per_class"]) == set(BRATS)
    with_dice = [got[(c, "whole")]["dice"] for c in cases]
    assert summary["per_class"]["whole"]["metrics"]["dice"]["mean"] == pytest.approx(np.mean(with_dice))


def test_regions_of_volumes_use_the_nifti_spacing(tmp_path):
    rng = np.random.default_rng(1)
    ref, pred = _nested(rng, (8, 20, 20)), _nested(rng, (8, 20, 20), centre_jitter=2)
    affine = np.diag([0.8, 0.8, 2.5, 1.0])  # x, y 0.8 mm; slices 2.5 mm
    for folder, arr in (("labelsTr", ref), ("pred", pred)):
        (tmp_path / folder).mkdir()
        nib.save(nib.Nifti1Image(arr.transpose(2, 1, 0), affine), str(tmp_path / folder / "b_001.nii.gz"))
    res = score_folders(tmp_path / "pred", tmp_path / "labelsTr", regions="core=2,3;enhancing=3")
    for rec, labels in zip(res["records"], ([2, 3], [3])):
        p, r = np.isin(pred, labels), np.isin(ref, labels)
        assert rec["dice"] == pytest.approx(_dice(p, r))
        assert rec["hd95"] == pytest.approx(_hd95(p, r, (2.5, 0.8, 0.8)))


def test_every_source_gives_the_same_regions(tmp_path):
    _pairs_2d(tmp_path, n=2)
    (tmp_path / "regions.yaml").write_text(yaml.safe_dump(BRATS, sort_keys=False))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"regions": BRATS}}, sort_keys=False))
    nnunet = {"labels": {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": 3}}
    nnunet["regions_class_order"] = [1, 2, 3]
    (tmp_path / "dataset.json").write_text(json.dumps(nnunet))  # beside gt/: found by itself
    specs = [
        "{whole: [1, 2, 3], core: [2, 3], enhancing: [3]}",
        "whole=1,2,3; core=2,3; enhancing=3",
        tmp_path / "regions.yaml",
        run,
        run / "config.yaml",
        tmp_path / "dataset.json",
        None,
    ]
    results = [score_folders(tmp_path / "pred", tmp_path / "gt", regions=s) for s in specs]
    for res in results:
        assert res["meta"]["regions"] == BRATS
        assert [r["dice"] for r in res["records"]] == [r["dice"] for r in results[0]["records"]]
    assert results[-1]["meta"]["regions_from"].endswith("dataset.json")
    per_label = score_folders(tmp_path / "pred", tmp_path / "gt", regions="none", class_names=list("bxyz"))
    assert per_label["meta"]["scored"] == "per class" and {r["class"] for r in per_label["records"]} == set(
        "xyz"
    )


def test_the_nnunet_ignore_label_is_left_out_of_every_region(tmp_path):
    ref = np.zeros((20, 20), np.uint8)
    ref[5:15, 5:15] = 1
    ref[8:12, 8:12] = 2
    pred = ref.copy()
    ref[0:4, :] = 3  # the ignore label: not scored, wherever the prediction says
    pred[0:4, :] = 1
    _png(tmp_path / "gt" / "a.png", ref)
    _png(tmp_path / "pred" / "a.png", pred)
    labels = {"background": 0, "tissue": [1, 2], "core": 2, "ignore": 3}
    (tmp_path / "gt" / "dataset.json").write_text(json.dumps({"labels": labels}))
    res = score_folders(tmp_path / "pred", tmp_path / "gt")
    assert res["meta"]["ignore_label"] == 3
    assert [r["dice"] for r in res["records"]] == [1.0, 1.0]


def test_bad_region_specs_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="background 0 never"):
        resolve_regions("{a: [0, 1]}", tmp_path)
    with pytest.raises(ConfigError, match=r"outside 1\.\.2 \(--num-classes 3\)"):
        resolve_regions({"a": [1, 3]}, tmp_path, num_classes=3)
    with pytest.raises(ConfigError, match="same labels"):
        resolve_regions("a=1,2;b=2,1", tmp_path)
    with pytest.raises(ConfigError, match="no such file or folder"):
        resolve_regions("wt", tmp_path)
    with pytest.raises(ConfigError, match="integers"):
        resolve_regions("{a: [1.5]}", tmp_path)
    (tmp_path / "config.yaml").write_text("data: {root: x}\n")
    with pytest.raises(ConfigError, match="data.regions is not set"):
        resolve_regions(tmp_path, tmp_path)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(DataError, match="broken.json: cannot read regions"):
        resolve_regions(tmp_path / "broken.json", tmp_path)


def test_score_command_with_regions(tmp_path, capsys):
    cases = _pairs_2d(tmp_path, n=2)
    out = tmp_path / "report"
    args = ["score", str(tmp_path / "pred"), str(tmp_path / "gt"), "--out", str(out), "--no-plots"]
    assert main([*args, "--regions", "wt=1,2,3;et=3"]) == 0
    captured = capsys.readouterr()
    assert "wt" in captured.out and "et" in captured.out  # the scores: stdout
    assert "regions wt=1,2,3; et=3 (from --regions)" in captured.err  # which definition: stderr
    rows = (out / "per_case.csv").read_text().splitlines()
    assert len(rows) == 1 + 4
    summary = json.loads((out / "summary.json").read_text())
    assert summary["per_class"]["et"]["metrics"]["dice"]["mean"] == pytest.approx(
        np.mean([_dice(p == 3, r == 3) for p, r in cases.values()])
    )
    assert main([*args, "--regions", "wt=1,x"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "wt=1,x" in err[0] and "Traceback" not in err[0]


# ------------------------------------------------------------------ equal to `medseg evaluate`


@pytest.fixture(scope="module")
def region_run(tmp_path_factory):
    """A region-based run trained for a few steps on nested discs (its predictions are rough,
    which is what the comparison needs: neither all right nor all empty)."""
    from medseg.config import load_config
    from medseg.engine.trainer import train

    tmp = tmp_path_factory.mktemp("regions")
    rng = np.random.default_rng(3)
    for i in range(8):
        label = _nested(rng, (32, 32), centre_jitter=4)
        img = 40 + 55 * label + rng.normal(0, 12, label.shape)
        _png(tmp / "data" / "images" / f"c{i}.png", np.clip(img, 0, 255))
        _png(tmp / "data" / "masks" / f"c{i}.png", label)
    cfg = load_config(
        None,
        [
            f"data.root={tmp / 'data'}",
            "data.size=[32,32]",
            "data.split.val_fraction=0.25",
            "data.regions={whole: [1, 2, 3], core: [2, 3], enhancing: [3]}",
            "model.options={depth: 2, base_width: 8}",
            "train.epochs=6",
            "train.batch_size=2",
            "train.log_tensorboard=false",
            "optim.lr=0.02",
            "eval.overlays=0",
            f"output_dir={tmp / 'run'}",
        ],
    )
    train(cfg)
    return tmp


@pytest.mark.parametrize("combine", ["max", "pooled"])
def test_score_equals_evaluate_on_the_same_predictions(region_run, combine):
    from medseg.engine.evaluator import evaluate_checkpoint
    from medseg.engine.predictor import predict_folder

    tmp = region_run
    ckpt = tmp / "run" / "checkpoints" / "best.safetensors"
    over = [f"eval.hd_combine={combine}", "eval.nsd_tolerance=2.0"]
    evaluated = evaluate_checkpoint(
        ckpt, overrides=over, data_root=tmp / "data", out_dir=tmp / f"eval_{combine}", device="cpu"
    )
    if not (tmp / "pred" / "masks").is_dir():
        predict_folder(ckpt, tmp / "data" / "images", tmp / "pred", device="cpu", overlays=False)
    scored = score_folders(
        tmp / "pred" / "masks", tmp / "data" / "masks", regions=tmp / "run", hd_combine=combine, plots=False
    )
    key = ("case", "class")
    want = {tuple(r[k] for k in key): r for r in evaluated["records"]}
    got = {tuple(r[k] for k in key): r for r in scored["records"]}
    assert set(got) == set(want) and len(got) == 8 * 3
    for k, rec in want.items():
        for metric in ("dice", "iou", "hd", "hd95", "assd", "nsd", "tp", "fp", "fn"):
            assert got[k][metric] == pytest.approx(rec[metric], nan_ok=True), (k, metric)
    dice = [r["dice"] for r in want.values()]
    assert any(0 < d < 1 for d in dice), dice  # rough predictions: the comparison is not trivial
