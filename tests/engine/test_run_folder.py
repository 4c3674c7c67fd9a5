"""The run folder: one training at a time, no silent overwrite, orphan temp files cleaned,
and ``resume`` extending a finished run (or saying it has nothing to do)."""

from __future__ import annotations

import csv
import fcntl
import subprocess
import sys

import pytest

from medseg.config import load_config
from medseg.engine.run_folder import LOCK_NAME, claim_run_folder
from medseg.engine.train_state import TrainState, resume_plan
from medseg.engine.trainer import train
from medseg.errors import MedsegError

TINY = [
    "data.format=synthetic",
    "data.synthetic.n=12",
    "data.synthetic.size=32",
    "data.size=[32,32]",
    "data.split.val_fraction=0.25",
    "data.split.test_fraction=0.0",
    "model.options={depth: 2, base_width: 4}",
    "train.batch_size=4",
    "train.seed=3",
    "train.log_tensorboard=false",
]


def _epochs(out) -> list[int]:
    with open(out / "log.csv") as fh:
        return [int(r["epoch"]) for r in csv.DictReader(fh)]


def test_a_used_folder_is_refused_without_resume_or_overwrite(tmp_path):
    cfg = load_config(None, TINY + ["train.epochs=1", f"output_dir={tmp_path}"])
    train(cfg)
    last = tmp_path / "checkpoints" / "last.safetensors"
    before = last.read_bytes()
    with pytest.raises(MedsegError, match="--resume.*--overwrite"):
        train(cfg)
    assert last.read_bytes() == before
    (tmp_path / "checkpoints" / "best.safetensors").unlink()
    train(cfg, overwrite=True)
    assert _epochs(tmp_path) == [1]


def test_a_locked_folder_is_refused(tmp_path):
    """Another process holding the lock (a training running) makes a second one fail at once."""
    (tmp_path / LOCK_NAME).touch()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl,sys,time; f=open(sys.argv[1],'a'); fcntl.flock(f, fcntl.LOCK_EX); "
            "print('locked', flush=True); time.sleep(60)",
            str(tmp_path / LOCK_NAME),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        cfg = load_config(None, TINY + ["train.epochs=1", f"output_dir={tmp_path}"])
        with pytest.raises(MedsegError, match="another training"):
            train(cfg)
        assert not (tmp_path / "checkpoints").exists()
    finally:
        holder.kill()
        holder.wait()
    # released when its holder dies (even SIGKILL): the folder can be claimed again
    with claim_run_folder(tmp_path, resume=False, overwrite=False):
        with open(tmp_path / LOCK_NAME) as fh, pytest.raises(OSError):
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_orphan_temp_checkpoints_are_removed_on_the_next_start(tmp_path):
    cfg = load_config(None, TINY + ["train.epochs=1", f"output_dir={tmp_path}"])
    train(cfg)
    orphans = [tmp_path / "checkpoints" / ".last.safetensors.abc123.tmp", tmp_path / ".log.csv.x1.tmp"]
    for path in orphans:
        path.write_bytes(b"half")
    keep = tmp_path / "checkpoints" / "notes.tmp"  # not an atomic writer's temp name
    keep.write_text("mine")
    train(load_config(None, TINY + ["train.epochs=2", f"output_dir={tmp_path}"]), resume=True)
    assert not any(p.exists() for p in orphans)
    assert keep.read_text() == "mine"


def test_resume_extends_a_finished_run(tmp_path, capsys):
    train(load_config(None, TINY + ["train.epochs=1", f"output_dir={tmp_path}"]))
    capsys.readouterr()
    result = train(load_config(None, TINY + ["train.epochs=3", f"output_dir={tmp_path}"]), resume=True)
    assert _epochs(tmp_path) == [1, 2, 3]
    assert [r["epoch"] for r in result["history"]] == [1, 2, 3]
    out = capsys.readouterr().err
    assert "extending the finished run" in " ".join(out.split())
    again = train(load_config(None, TINY + ["train.epochs=3", f"output_dir={tmp_path}"]), resume=True)
    assert again["stop_reason"] == "nothing to do"
    assert "nothing to do" in " ".join(capsys.readouterr().err.split())
    assert _epochs(tmp_path) == [1, 2, 3]


def test_resume_plan_cases():
    finished = TrainState(epoch=5, finished=True, configured_epochs=10, stale=4, planned_steps=50)
    first, line = resume_plan(finished, 10)  # early-stopped at 5 of 10: nothing more
    assert first == 11 and "nothing to do" in line
    first, line = resume_plan(finished, 12)
    assert first == 6 and "12 epochs" in line
    assert not finished.finished and finished.stale == 0 and finished.planned_steps is None
    assert resume_plan(TrainState(epoch=2), 5)[0] == 3
    assert resume_plan(TrainState(epoch=5), 3) == (4, "nothing to do: 5 epochs are done and this run has 3")


def test_an_empty_evaluation_split_is_refused_before_training(tmp_path):
    cfg = load_config(None, TINY + ["train.epochs=1", f"output_dir={tmp_path}"])  # test_fraction=0
    with pytest.raises(MedsegError, match="test split has no cases"):
        train(cfg, evaluate_split="test")
    assert not (tmp_path / "checkpoints").exists()


def test_init_from_fine_tunes_onto_another_label_set(tmp_path, capsys):
    """A binary run's weights initialise a 4-class grey run: all but the head load, the head is skipped."""
    import torch

    from medseg.engine.checkpoint import read_checkpoint
    from medseg.models.weights_file import split_tensors

    src = tmp_path / "src"
    train(load_config(None, TINY + ["train.epochs=1", f"output_dir={src}"]))
    ckpt = src / "checkpoints" / "last.safetensors"
    source = split_tensors(read_checkpoint(ckpt)[0], "model")
    dst = tmp_path / "dst"
    multi = TINY + ["data.synthetic.kind=multiclass", "train.epochs=1", "optim.lr=1e-12", f"output_dir={dst}"]
    train(load_config(None, multi + [f"model.init_from={ckpt}"]))
    err = " ".join(capsys.readouterr().err.split())
    assert "initialised from" in err and "skipped" in err and "vs model" in err
    tuned = split_tensors(read_checkpoint(dst / "checkpoints" / "last.safetensors")[0], "model")
    same = [k for k in tuned if k in source and tuned[k].shape == source[k].shape]
    other = [k for k in tuned if k in source and tuned[k].shape != source[k].shape]
    assert other and len(same) > len(other)
    encoder = next(k for k in same if "weight" in k and tuned[k].dim() == 4)
    assert torch.allclose(tuned[encoder], source[encoder], atol=1e-6)
