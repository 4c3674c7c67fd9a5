"""The training engine end to end on tiny phantom data (and PH2 when MEDSEG_DATA is set)."""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medseg.config import load_config
from medseg.engine import train_log
from medseg.engine.checkpoint import read_checkpoint
from medseg.engine.sampler import EpochSampler
from medseg.engine.schedule import lr_factor
from medseg.engine.trainer import train

TINY = [
    "data.format=synthetic",
    "data.synthetic.n=24",
    "data.synthetic.size=32",
    "data.size=[32,32]",
    "data.split.val_fraction=0.25",
    "data.split.test_fraction=0.0",
    "model.options={depth: 2, base_width: 4}",
    "train.batch_size=4",
    "train.seed=3",
    "train.log_tensorboard=false",
    "optim.lr=0.01",
]


def _log(path: Path) -> list[dict]:
    with open(path / "log.csv") as fh:
        return list(csv.DictReader(fh))


def test_train_writes_checkpoints_logs_and_curves(tmp_path):
    cfg = load_config(None, TINY + ["train.epochs=2", f"output_dir={tmp_path}"])
    result = train(cfg)
    rows = _log(tmp_path)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(math.isfinite(float(r["train_loss"])) for r in rows)
    assert 0.0 <= result["best_val_dice"] <= 1.0
    for name in ("last.safetensors", "best.safetensors"):
        assert (tmp_path / "checkpoints" / name).is_file()
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert (tmp_path / "config.yaml").is_file()
    _, meta = read_checkpoint(tmp_path / "checkpoints" / "last.safetensors")
    assert meta["state"]["epoch"] == 2 and "optimizer" in meta and "rng" in meta


def test_loss_decreases_on_phantoms(tmp_path):
    cfg = load_config(None, TINY + ["train.epochs=6", "data.synthetic.n=32", f"output_dir={tmp_path}"])
    train(cfg)
    losses = [float(r["train_loss"]) for r in _log(tmp_path)]
    assert losses[-1] < 0.9 * losses[0], losses


def test_resume_continues_exactly(tmp_path, monkeypatch):
    """A run that crashes after epoch 2 and is resumed reproduces the uninterrupted losses."""
    full = load_config(None, TINY + ["train.epochs=4", f"output_dir={tmp_path / 'full'}"])
    train(full)
    write_log = train_log.write_log

    class Crash(Exception):
        pass

    def crash_after_epoch_2(path, history):
        write_log(path, history)
        if len(history) == 2:
            raise Crash

    monkeypatch.setattr(train_log, "write_log", crash_after_epoch_2)
    part = load_config(None, TINY + ["train.epochs=4", f"output_dir={tmp_path / 'part'}"])
    with pytest.raises(Crash):
        train(part)
    monkeypatch.undo()
    assert len(_log(tmp_path / "part")) == 2
    torch.manual_seed(999)  # the resumed run must not depend on the RNG state it starts with
    train(part, resume=True)
    a = [float(r["train_loss"]) for r in _log(tmp_path / "full")]
    b = [float(r["train_loss"]) for r in _log(tmp_path / "part")]
    assert len(b) == 4
    assert b == pytest.approx(a, rel=1e-6, abs=1e-7)


def test_budget_stops_training_and_decays_the_schedule(tmp_path):
    cfg = load_config(
        None, TINY + ["train.epochs=1000", "train.budget_minutes=0.05", f"output_dir={tmp_path}"]
    )
    result = train(cfg)
    assert result["stop_reason"] == "budget"
    rows = _log(tmp_path)
    assert 1 <= len(rows) < 1000
    # the budget became a step plan, and no more steps than planned were run; that the learning
    # rate then ends at its floor is checked on a simulated clock (tests/engine/test_budget.py):
    # on a real one, a loaded machine can spend a 3-second budget on the first epoch's logging
    assert result["planned_steps"] is not None and int(rows[-1]["step"]) <= result["planned_steps"]
    assert float(rows[-1]["lr"]) <= 0.01


def test_a_budget_that_ends_between_validations_still_validates_the_last_epoch(tmp_path):
    """val_every=1000: the budget stops the run long before a scheduled validation, yet the model
    at the end of the schedule is validated and kept as the best (the only one validated)."""
    cfg = load_config(
        None,
        TINY
        + [
            "train.epochs=1000",
            "train.val_every=1000",
            "train.budget_minutes=0.05",
            f"output_dir={tmp_path}",
        ],
    )
    result = train(cfg)
    rows = _log(tmp_path)
    assert result["stop_reason"] == "budget" and len(rows) < 1000
    assert [r["val_dice"] != "" for r in rows] == [False] * (len(rows) - 1) + [True]
    assert result["best_val_dice"] == pytest.approx(float(rows[-1]["val_dice"]))
    _, meta = read_checkpoint(tmp_path / "checkpoints" / "best.safetensors")
    assert meta["state"]["best_epoch"] == len(rows)


# Runs `medseg train` and SIGKILLs the process itself at the moment it would publish its
# KILL_AT-th `last.safetensors` (the temp file is written, the rename never happens): a crash at
# a fixed point of training, whatever the speed of the machine.
_KILL_AT_NTH_CHECKPOINT = """
import os, signal, sys
from medseg.cli import main

kill_at, seen, real_replace = int(sys.argv[1]), [], os.replace

def replace(src, dst, *args, **kwargs):
    if os.path.basename(dst) == "last.safetensors":
        seen.append(dst)
        if len(seen) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst, *args, **kwargs)

os.replace = replace
sys.exit(main(sys.argv[2:]))
"""


def test_sigkill_mid_training_then_resume(tmp_path):
    """SIGKILL while epoch 3's checkpoint is being written: the epoch-2 checkpoint stays intact
    and readable, and --resume finishes with exactly the uninterrupted run's losses."""
    args = ["train", "--epochs", "6"]
    for item in TINY + ["data.synthetic.n=48"]:
        args += ["--set", item]
    env = {**os.environ, "MEDSEG_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    cli = [sys.executable, "-m", "medseg.cli"]
    subprocess.run(cli + args + ["--out", str(tmp_path / "ref")], check=True, env=env, capture_output=True)
    killed = subprocess.run(
        [sys.executable, "-c", _KILL_AT_NTH_CHECKPOINT, "3", *args, "--out", str(tmp_path / "run")],
        env=env,
        capture_output=True,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    ckpt = tmp_path / "run" / "checkpoints"
    leftovers = [p.name for p in ckpt.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1 and leftovers[0].startswith(".last.")  # the write that never landed
    _, meta = read_checkpoint(ckpt / "last.safetensors")
    ref = [float(r["train_loss"]) for r in _log(tmp_path / "ref")]
    second = _log(tmp_path / "ref")[1]  # the checkpoint on disk is the second epoch's
    assert (meta["state"]["epoch"], meta["state"]["step"]) == (int(second["epoch"]), int(second["step"]))
    subprocess.run(
        cli + args + ["--out", str(tmp_path / "run"), "--resume"], check=True, env=env, capture_output=True
    )
    got = [float(r["train_loss"]) for r in _log(tmp_path / "run")]
    assert len(got) == 6 and got == pytest.approx(ref, rel=1e-6, abs=1e-7)


def test_epoch_sampler_is_a_function_of_epoch_and_shards_cover_everything():
    s = EpochSampler(10, seed=1)
    s.set_epoch(3)
    first = list(s)
    s.set_epoch(4)
    assert list(s) != first
    s.set_epoch(3)
    assert list(s) == first
    shards = []
    for rank in range(3):
        r = EpochSampler(10, seed=1, rank=rank, world=3)
        r.set_epoch(3)
        shards += list(r)
    assert set(shards) == set(range(10)) and len(shards) == 12


def test_lr_schedules():
    from medseg.config import ScheduleConfig

    poly = ScheduleConfig(name="poly", warmup_epochs=0, power=1.0)
    assert lr_factor(0, 100, 0, poly) == pytest.approx(1.0)
    assert lr_factor(50, 100, 0, poly) == pytest.approx(0.5)
    cos = ScheduleConfig(name="cosine")
    assert lr_factor(50, 100, 0, cos) == pytest.approx(0.5)
    assert lr_factor(100, 100, 0, cos) == pytest.approx(0.0)
    assert lr_factor(4, 100, 10, poly) == pytest.approx(0.5)  # warm-up: (4+1)/10


def test_sgd_nesterov_and_bf16_autocast(tmp_path):
    cfg = load_config(
        None,
        TINY
        + [
            "train.epochs=1",
            "optim.name=sgd",
            "optim.momentum=0.99",
            "optim.lr=0.001",
            "train.amp=bf16",
            "train.grad_clip=1.0",
            f"output_dir={tmp_path}",
        ],
    )
    train(cfg)
    assert math.isfinite(float(_log(tmp_path)[0]["train_loss"]))


def test_ddp_two_processes_match_single_process(tmp_path):
    """torchrun with 2 gloo processes sees the same batches as one process with twice the
    batch: with per-sample normalisation and a pixel-mean loss the runs agree."""
    common = TINY + [
        "model.options={depth: 2, base_width: 4, norm: group}",
        "loss.name=ce",
        "augment.enabled=false",
        "train.epochs=2",
        "train.steps_per_epoch=2",
        "data.synthetic.n=24",
    ]
    single = load_config(None, common + ["train.batch_size=4", f"output_dir={tmp_path / 'one'}"])
    train(single)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "medseg.cli",
        "train",
        "--out",
        str(tmp_path / "two"),
    ]
    for item in common + ["train.batch_size=2"]:
        cmd += ["--set", item]
    env = {**os.environ, "MEDSEG_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = [float(r["train_loss"]) for r in _log(tmp_path / "one")]
    b = [float(r["train_loss"]) for r in _log(tmp_path / "two")]
    assert b == pytest.approx(a, rel=1e-4)
    wa, _ = read_checkpoint(tmp_path / "one" / "checkpoints" / "last.safetensors")
    wb, _ = read_checkpoint(tmp_path / "two" / "checkpoints" / "last.safetensors")
    for k in wa:
        if k.startswith("model."):
            torch.testing.assert_close(wa[k], wb[k], rtol=1e-3, atol=1e-3)


def test_ph2_train_then_evaluate_beats_background(tmp_path, data_root):
    """U-Net on real PH2 images (small, fast), evaluated on held-out images."""
    from medseg.engine.evaluator import evaluate_checkpoint

    cfg = load_config(
        Path(__file__).parents[2] / "configs" / "unet_ph2.yaml",
        [
            f"data.root={data_root / 'ph2'}",
            "data.size=[64,64]",
            # the preset's recipe (deep supervision, instance norm) in a small, fast U-Net
            "model.options={depth: 3, base_width: 8, norm: instance, deep_supervision: true}",
            "train.epochs=4",
            "train.val_every=1",
            "train.budget_minutes=null",
            "train.batch_size=8",
            "optim.lr=0.003",
            "train.log_tensorboard=false",
            "eval.overlays=3",
            f"output_dir={tmp_path}",
            "train.early_stopping=null",
        ],
    )
    result = train(cfg)
    ev = evaluate_checkpoint(result["checkpoint"], split="test")
    dice = [r["dice"] for r in ev["records"]]
    assert len(dice) >= 10
    # all-background prediction scores Dice 0 on every lesion image
    assert sum(dice) / len(dice) > 0.5
    out = Path(ev["out_dir"])
    assert any(out.glob("*.csv")) and any((out / "overlays").glob("*.png"))
