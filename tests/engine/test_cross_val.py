"""K-fold training end to end: ``train --fold all`` on tiny phantoms (every case validated once,
out-of-fold labels and probabilities consistent, the split saved and reused), the post-processing
decided on hand-built out-of-fold cases (nnU-Net's rule keeps keep-largest only when it helps),
and the plan found and applied by ``evaluate``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medseg.cli import main
from medseg.config import load_config
from medseg.engine.cross_val import decide_run_postprocessing, run_cross_validation
from medseg.engine.evaluator import evaluate_checkpoint
from medseg.engine.probabilities import load_probabilities
from medseg.engine.run_postprocess import run_plan_path
from medseg.metrics import dice
from medseg.postprocess import PLAN_FILE, PostprocessPlan, Step

TINY = [
    "data.format=synthetic",
    "data.synthetic.n=8",
    "data.synthetic.size=32",
    "data.size=[32,32]",
    "data.split.test_fraction=0.0",
    "data.split.folds=2",
    "model.options={depth: 2, base_width: 4}",
    "train.batch_size=4",
    "train.epochs=1",
    "train.seed=3",
    "train.log_tensorboard=false",
    "eval.overlays=0",
]


def _write_oof(fold_dir, cases):
    labels = fold_dir / "oof" / "labels"
    labels.mkdir(parents=True)
    for i, (pred, ref) in enumerate(cases):
        np.savez(
            labels / f"c{i}.npz",
            labels=pred,
            reference=ref,
            case_id=np.asarray(f"c{i}"),
            num_classes=np.asarray(2),
        )


def _square(shape, y, x, s):
    m = np.zeros(shape, np.uint8)
    m[y : y + s, x : x + s] = 1
    return m


def test_keep_largest_is_chosen_when_it_removes_false_positives(tmp_path):
    ref = _square((32, 32), 4, 4, 10)
    pred = ref.copy()
    pred[25:28, 25:28] = 1  # a spurious blob far from the lesion
    _write_oof(tmp_path / "fold_0", [(pred, ref), (ref.copy(), ref)])
    plan = decide_run_postprocessing([tmp_path / "fold_0"], tmp_path / PLAN_FILE, log=lambda _: None)
    assert [s.kind for s in plan.steps] == ["largest_foreground"]
    before = (dice(pred == 1, ref == 1) + 1.0) / 2  # hand computation: case 2 is perfect
    assert plan.decision[0]["mean_before"] == pytest.approx(before)
    assert plan.decision[0]["mean_after"] == pytest.approx(1.0)
    assert PostprocessPlan.load(tmp_path / PLAN_FILE).steps == plan.steps


def test_keep_largest_is_rejected_when_it_would_delete_real_structures(tmp_path):
    ref = _square((32, 32), 2, 2, 10) | _square((32, 32), 20, 20, 5)  # two real lesions
    pred = ref.copy()  # both found: dropping the smaller one lowers Dice
    _write_oof(tmp_path / "fold_0", [(pred, ref)])
    plan = decide_run_postprocessing([tmp_path / "fold_0"], tmp_path / PLAN_FILE, log=lambda _: None)
    assert plan.steps == []
    first = plan.decision[0]
    assert first["step"] == "largest_foreground" and not first["kept"]
    assert first["mean_after"] == pytest.approx(dice(_square((32, 32), 2, 2, 10) == 1, ref == 1))


def test_the_run_plan_wins_over_a_folds_own(tmp_path):
    ckpt = tmp_path / "fold_1" / "checkpoints" / "best.safetensors"
    ckpt.parent.mkdir(parents=True)
    assert run_plan_path(ckpt) is None
    PostprocessPlan().save(tmp_path / "fold_1" / PLAN_FILE)
    assert run_plan_path(ckpt) == (tmp_path / "fold_1" / PLAN_FILE).resolve()
    PostprocessPlan().save(tmp_path / PLAN_FILE)
    assert run_plan_path(ckpt) == (tmp_path / PLAN_FILE).resolve()
    plain = tmp_path / "plain" / "checkpoints" / "best.safetensors"
    plain.parent.mkdir(parents=True)
    assert run_plan_path(plain) is None  # a plain run never borrows its parent folder's plan


@pytest.mark.slow
def test_fold_all_end_to_end(tmp_path):
    run = tmp_path / "cv"
    cfg = load_config(None, TINY + [f"output_dir={run}"])
    result = run_cross_validation(cfg, log=lambda _: None)
    table = json.loads((run / "splits.json").read_text(encoding="utf-8"))["cross_validation"]
    vals = [set(f["val"]) for f in table]
    assert len(vals) == 2 and not vals[0] & vals[1] and len(vals[0] | vals[1]) == 8
    for k, fold in enumerate(result["folds"]):
        fold_dir = run / f"fold_{k}"
        assert set(json.loads((fold_dir / "splits.json").read_text(encoding="utf-8"))["val"]) == vals[k]
        files = sorted((fold_dir / "oof" / "labels").glob("*.npz"))
        assert len(files) == len(vals[k])
        for f in files:
            with np.load(f) as z:
                proba = load_probabilities(fold_dir / "oof" / "probabilities" / f.name)
                assert (
                    proba.case_id in vals[k]
                    and len(proba.channels) == 2
                    and proba.channels[0] == "background"
                )
                np.testing.assert_array_equal(proba.labels(), z["labels"])
        # the OOF report scores the fold's validation cases as the trainer's validation did
        assert fold["oof_summary"]["macro"]["dice"] == pytest.approx(fold["best_val_dice"], abs=1e-3)
    report = result["report"]
    assert report["n_cases"] == 8 and report["folds"] == [0, 1]
    assert (run / PLAN_FILE).is_file() and (run / "cv" / "cv_report.md").is_file()

    # evaluate applies the run's plan by default: its Dice is that of the plan applied to the OOF labels
    PostprocessPlan([Step("largest_foreground", (1,))]).save(run / PLAN_FILE)
    ckpt = result["folds"][0]["checkpoint"]
    with_pp = evaluate_checkpoint(ckpt, split="val", out_dir=tmp_path / "e1")
    without = evaluate_checkpoint(ckpt, split="val", out_dir=tmp_path / "e2", postprocess=False)
    assert "largest_foreground[1]" in with_pp["postprocessing"] and "skipped" in without["postprocessing"]
    plan = PostprocessPlan.load(run / PLAN_FILE)
    for rec_pp, rec_raw in zip(with_pp["records"], without["records"]):
        f = run / "fold_0" / "oof" / "labels" / f"{rec_pp['case']}.npz"
        with np.load(f) as z:
            assert rec_raw["dice"] == pytest.approx(dice(z["labels"] == 1, z["reference"] == 1))
            assert rec_pp["dice"] == pytest.approx(dice(plan.apply(z["labels"]) == 1, z["reference"] == 1))
    meta = json.loads((tmp_path / "e1" / "summary.json").read_text(encoding="utf-8"))["meta"]
    assert meta["postprocessing"].startswith("largest_foreground") and meta["hd_combine"] == "max"

    # a rerun reuses the saved fold table (and resumes the finished folds: nothing to train)
    before = (run / "splits.json").read_text(encoding="utf-8")
    again = run_cross_validation(cfg, fold=1, resume=True, log=lambda _: None)
    assert (run / "splits.json").read_text(encoding="utf-8") == before
    assert again["folds"][0]["history"] == result["folds"][1]["history"]


def test_cli_fold_errors_are_one_line(tmp_path, capsys):
    args = ["train", *sum((["--set", s] for s in TINY), []), "--out", str(tmp_path / "r")]
    assert main([*args, "--fold", "x"]) == 2
    assert "--fold 'x': expected a fold number or 'all'" in capsys.readouterr().err
    assert main([*args, "--fold", "5"]) == 2
    assert "--fold 5: the cross-validation has folds 0..1" in capsys.readouterr().err


def test_plain_train_decides_postprocessing_on_validation_and_predict_applies_it(tmp_path, capsys):
    """`medseg train` without --fold predicts its validation cases after training, decides the
    post-processing on them (RUN/postprocessing.json, with the validation scores recorded), and
    `predict` reports applying it; --no-postprocess skips the decision."""
    sets = [s for s in TINY if not s.startswith("data.split.folds")] + ["data.split.val_fraction=0.5"]
    args = [a for s in sets for a in ("--set", s)]
    run = tmp_path / "run"
    assert main(["train", *args, "--out", str(run)]) == 0
    plan = PostprocessPlan.load(run / PLAN_FILE)
    tried = plan.decision[0]
    assert tried["step"] == "largest_foreground" and len(tried["dice_before"]) == 1
    assert len(list((run / "oof" / "labels").glob("*.npz"))) == 4  # the 4 validation cases
    said = capsys.readouterr()
    assert "decided on 4 validation cases" in said.out + said.err  # a plain run has no folds
    assert "out-of-fold" not in said.out + said.err
    ckpt = run / "checkpoints" / "best.safetensors"
    assert run_plan_path(ckpt) == run / PLAN_FILE
    assert main(["predict", str(ckpt), str(tmp_path / "in"), "--out", str(tmp_path / "p")]) != 0  # no input
    bare = tmp_path / "bare"
    assert main(["train", *args, "--out", str(bare), "--no-postprocess"]) == 0
    assert not (bare / PLAN_FILE).exists()
