"""Train nnU-Net v2 and medseg for the same wall-clock budget, one after the other, on one split.

usage (from the repository root, with medseg's venv; WORK made by bench/nnunet/prepare.py):
    python bench/nnunet/run.py --dataset ph2 --budget 5 --tool both WORK
        [--medseg-config configs/unet_ph2.yaml] [--nnunet-iters N] [--nnunet-val-iters 2]
        [--disable-tta] [--medseg-tta] [--set KEY=VALUE ...]

nnU-Net (Isensee et al. 2021, Nature Methods 18:203) runs from .venv-nnunet (bench/nnunet/setup.sh):
plan and preprocess the 2d configuration (not counted in the budget, timed apart), put our
splits_final.json in place (fold 0 = our train/val), train with nnUNetTrainerBudget (times its first
epoch, then fits the number of epochs and its poly schedule to the budget), predict the test images
with checkpoint_final.pth. medseg runs `medseg train --budget` with the given config, its data root
and run folder pointed into WORK, then `medseg predict` with its best checkpoint.

WORK receives:
  predictions/nnunet/    nnU-Net label files (PH2: 0/1 PNG; ACDC: NIfTI volumes)
  predictions/medseg/masks/  medseg label files (PH2: 0/255 PNG; ACDC: .npy volumes)
  config/                nnU-Net plans + fingerprint + budget report; medseg config.yaml + log.csv
  run_nnunet.json, run_medseg.json   every command, its wall time, the load average before and
                         after it, the budget and the training steps done
  logs/                  stdout/stderr of every command
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml  # a dependency of medseg, whose venv runs this script

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CONFIGS = {"ph2": "configs/unet_ph2.yaml", "acdc": "configs/unet_acdc.yaml"}


def fail(message: str) -> None:
    print(f"run.py: {message}", file=sys.stderr)
    raise SystemExit(2)


def write_json(path: Path, obj: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    tmp.replace(path)


def child_cpu_seconds() -> float:
    """User + system CPU time of every finished child process and its descendants (the tools'
    data-loading workers included, once reaped)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Recorder:
    """Runs commands one at a time and records wall time and load average around each."""

    def __init__(self, work: Path, tool: str) -> None:
        self.work, self.tool = work, tool
        self.phases: list[dict] = []
        (work / "logs").mkdir(exist_ok=True)

    def run(self, name: str, cmd: list[str], env: dict[str, str]) -> float:
        log = self.work / "logs" / f"{self.tool}_{name}.log"
        print(f"[{self.tool}] {name}: {' '.join(cmd)}  (log: {log})", flush=True)
        load_before, cpu_before = os.getloadavg(), child_cpu_seconds()
        t0 = time.monotonic()
        with open(log, "w") as fh:
            proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO)
            samples = [os.getloadavg()[0]]
            while True:  # the 1-min load average every 10 s while the command runs
                try:
                    rc = proc.wait(timeout=10)
                    break
                except subprocess.TimeoutExpired:
                    samples.append(os.getloadavg()[0])
        wall = time.monotonic() - t0
        self.phases.append(
            {
                "phase": name,
                "command": cmd,
                "wall_seconds": round(wall, 2),
                "cpu_seconds": round(child_cpu_seconds() - cpu_before, 2),
                "loadavg_before": load_before,
                "loadavg_after": os.getloadavg(),
                "loadavg_1min_mean_during": round(sum(samples) / len(samples), 2),
                "returncode": rc,
            }
        )
        if rc != 0:
            tail = log.read_text().splitlines()[-15:]
            fail(f"{name} failed (exit {rc}); last lines of {log}:\n" + "\n".join(tail))
        print(
            f"[{self.tool}] {name}: {wall:.1f} s, load {self.phases[-1]['loadavg_after'][0]:.2f}", flush=True
        )
        return wall


# ----------------------------------------------------------------------------- threads and CPUs


def with_threads(env: dict[str, str], threads: int | None) -> dict[str, str]:
    """Intra-op threads of both tools' torch (nnU-Net's trainer otherwise takes every CPU)."""
    if threads:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NNUNET_TORCH_THREADS"):
            env[name] = str(threads)
    return env


def child_argv(argv: list[str], tool: str) -> list[str]:
    """This command line with ``--tool`` replaced by one tool on one thread."""
    out: list[str] = []
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token in ("--tool", "--threads"):
            skip = True
        elif not token.startswith(("--tool=", "--threads=")):
            out.append(token)
    return [*out, "--tool", tool, "--threads", "1"]


def run_side_by_side(argv: list[str]) -> int:
    """Both tools at the same time, each pinned to its own CPU with one thread.

    Run one after the other, two processes can meet a machine whose speed has drifted (measured
    here: up to 3.5x for identical work in fresh processes); side by side, both meet the same one.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        fail("--tool side-by-side needs two CPUs")
    procs = []
    for tool, cpu in zip(("nnunet", "medseg"), cpus, strict=False):
        cmd = [sys.executable, str(Path(__file__).resolve()), *child_argv(argv, tool)]
        procs.append(subprocess.Popen(cmd, preexec_fn=lambda c=cpu: os.sched_setaffinity(0, {c})))
        print(f"[{tool}] on CPU {cpu}: {' '.join(cmd)}", flush=True)
    codes = [p.wait() for p in procs]
    return max(codes)


# ----------------------------------------------------------------------------- nnU-Net


def nnunet_env(work: Path, args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        nnUNet_raw=str(work / "nnunet_raw"),
        nnUNet_preprocessed=str(work / "nnunet_preprocessed"),
        nnUNet_results=str(work / "nnunet_results"),
        nnUNet_n_proc_DA=str(args.nnunet_workers),
        nnUNet_compile="false",
        PATH=f"{args.nnunet_venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
    )
    env.pop("PYTHONPATH", None)
    return with_threads(env, args.threads)


def nnunet_iterations(plans: dict, n_train: int, args: argparse.Namespace) -> int:
    """Iterations per epoch: about one pass over the training cases (at least 10), unless given."""
    if args.nnunet_iters:
        return args.nnunet_iters
    batch = plans["configurations"]["2d"]["batch_size"]
    return max(10, math.ceil(n_train / batch))


def set_plan_batch_size(plans_file: Path, batch: int) -> None:
    """Edit the 2d batch size in nnU-Net's plans file, the way nnU-Net's documentation tells
    users to change a planned setting (its planner sizes the batch for an 8 GB GPU: 48 slices
    of ACDC, which on 2 CPU cores is about one step a minute). The planned value is kept in
    the file as ``batch_size_planned``; preprocessing does not depend on it."""
    plans = json.loads(plans_file.read_text())
    conf = plans["configurations"]["2d"]
    conf.setdefault("batch_size_planned", conf["batch_size"])
    conf["batch_size"] = batch
    plans_file.write_text(json.dumps(plans, indent=1))
    print(f"[nnunet] 2d batch size {conf['batch_size_planned']} -> {batch} (edited plans)", flush=True)


def run_nnunet(work: Path, meta: dict, args: argparse.Namespace) -> dict:
    rec = Recorder(work, "nnunet")
    env = nnunet_env(work, args)
    number, name = str(meta["nnunet"]["dataset_id"]), meta["nnunet"]["dataset_name"]
    bin_dir = args.nnunet_venv / "bin"
    if not (bin_dir / "nnUNetv2_train").exists():
        fail(f"{bin_dir}: no nnUNetv2_train (run bash bench/nnunet/setup.sh first)")
    pre = work / "nnunet_preprocessed" / name
    if (pre / "nnUNetPlans.json").is_file() and (pre / "nnUNetPlans_2d").is_dir():
        print(f"[nnunet] plan_and_preprocess: reusing {pre}", flush=True)  # deterministic, not in the budget
        rec.phases.append({"phase": "plan_and_preprocess", "reused": str(pre)})
    else:
        plan_cmd = [str(bin_dir / "nnUNetv2_plan_and_preprocess"), "-d", number, "-c", "2d", "-np", "2"]
        rec.run("plan_and_preprocess", plan_cmd + ["--verify_dataset_integrity"], env)
    shutil.copyfile(work / "splits_final.json", pre / "splits_final.json")
    if args.nnunet_batch_size:
        set_plan_batch_size(pre / "nnUNetPlans.json", args.nnunet_batch_size)
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    iters = nnunet_iterations(plans, len(meta["train"]), args)
    env.update(
        NNUNET_BUDGET_MINUTES=str(args.budget),
        NNUNET_ITERS=str(iters),
        NNUNET_VAL_ITERS=str(args.nnunet_val_iters),
        NNUNET_SKIP_FINAL_VAL="1",
    )
    trainer = "nnUNetTrainerBudget"
    train_cmd = [str(bin_dir / "nnUNetv2_train"), number, "2d", "0", "-tr", trainer, "-device", "cpu"]
    fold = work / "nnunet_results" / name / f"{trainer}__nnUNetPlans__2d" / "fold_0"
    out = work / "predictions" / "nnunet"
    for old in (fold, out):  # a fresh run, never a resumed one
        if old.exists():
            shutil.rmtree(old)
    train_wall = rec.run("train", train_cmd, env)
    pred_cmd = [str(bin_dir / "nnUNetv2_predict"), "-i", str(work / "nnunet_raw" / name / "imagesTs")]
    pred_cmd += ["-o", str(out), "-d", number, "-c", "2d", "-f", "0", "-tr", trainer]
    pred_cmd += ["-chk", "checkpoint_final.pth", "-device", "cpu", "-npp", "1", "-nps", "1"]
    pred_wall = rec.run("predict", pred_cmd + (["--disable_tta"] if args.disable_tta else []), env)
    cfg_dir = work / "config"
    cfg_dir.mkdir(exist_ok=True)
    for src, dst in [
        (pre / "nnUNetPlans.json", "nnunet_plans.json"),
        (pre / "dataset_fingerprint.json", "nnunet_dataset_fingerprint.json"),
        (fold / "budget_report.json", "nnunet_budget_report.json"),
    ]:
        shutil.copyfile(src, cfg_dir / dst)
    report = json.loads((fold / "budget_report.json").read_text())
    for log in sorted(fold.glob("training_log_*.txt")):
        shutil.copyfile(log, cfg_dir / f"nnunet_{log.name}")
    return {
        "tool": "nnunet",
        "train_process_seconds": round(train_wall, 1),
        "train_loop_seconds": round(report["train_loop_seconds"], 1),
        "predict_seconds": round(pred_wall, 1),
        "steps": report["steps"],
        "batch_size": report["batch_size"],
        "epochs": report["epochs"],
        "iterations_per_epoch": iters,
        "tta": not args.disable_tta,
        "checkpoint": "checkpoint_final.pth",
        "phases": rec.phases,
    }


# ----------------------------------------------------------------------------- medseg


def medseg_env(threads: int | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("MEDSEG_NO_PROGRESS", "1")
    return with_threads(env, threads)


def medseg_log(run_dir: Path) -> list[dict]:
    with open(run_dir / "log.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def run_medseg(work: Path, meta: dict, args: argparse.Namespace) -> dict:
    rec = Recorder(work, "medseg")
    env = medseg_env(args.threads)
    config = args.medseg_config or Path(DEFAULT_CONFIGS[meta["dataset"]])
    run_dir = work / "medseg_run"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a fresh run, never a resumed one
    cli = [sys.executable, "-m", "medseg.cli"]
    train_cmd = cli + ["train", "-c", str(config), "--data", str(work / "medseg_data"), "--out", str(run_dir)]
    train_cmd += ["--budget", f"{args.budget}m", "--device", "cpu"]
    for item in args.set:
        train_cmd += ["--set", item]
    train_wall = rec.run("train", train_cmd, env)
    best = run_dir / "checkpoints" / "best.safetensors"
    ckpt = best if best.exists() else run_dir / "checkpoints" / "last.safetensors"
    out = work / "predictions" / "medseg"
    if out.exists():
        shutil.rmtree(out)
    pred_cmd = cli + ["predict", str(ckpt), str(work / "test_input"), "--out", str(out), "--no-overlays"]
    pred_cmd += ["--device", "cpu"] + (["--tta"] if args.medseg_tta else [])
    pred_wall = rec.run("predict", pred_cmd, env)
    cfg_dir = work / "config"
    cfg_dir.mkdir(exist_ok=True)
    shutil.copyfile(run_dir / "config.yaml", cfg_dir / "medseg_config.yaml")
    shutil.copyfile(run_dir / "log.csv", cfg_dir / "medseg_log.csv")
    rows = medseg_log(run_dir)
    medseg_cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    seconds = sum(float(r["epoch_seconds"]) for r in rows)
    return {
        "tool": "medseg",
        "config": str(config),
        "train_process_seconds": round(train_wall, 1),
        "train_epochs_seconds": round(seconds, 1),
        "predict_seconds": round(pred_wall, 1),
        "steps": int(rows[-1]["step"]) if rows else 0,
        "batch_size": medseg_cfg["train"]["batch_size"],
        "epochs": len(rows),
        "tta": bool(args.medseg_tta or (medseg_cfg.get("eval") or {}).get("tta", False)),
        "checkpoint": ckpt.name,
        "phases": rec.phases,
    }


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("work", type=Path, help="folder written by bench/nnunet/prepare.py")
    ap.add_argument("--dataset", required=True, choices=["ph2", "acdc"])
    ap.add_argument("--budget", required=True, type=float, help="training wall time per tool, minutes")
    ap.add_argument(
        "--tool",
        default="both",
        choices=["nnunet", "medseg", "both", "side-by-side"],
        help="both: one after the other; side-by-side: at the same time, one CPU and one thread each",
    )
    ap.add_argument("--threads", type=int, help="intra-op threads of each tool (default: torch's choice)")
    ap.add_argument("--medseg-config", type=Path, help="medseg YAML (default: configs/unet_DATASET.yaml)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="medseg config override")
    ap.add_argument(
        "--medseg-tta",
        action="store_true",
        help="medseg predict --tta (already the default of a planned 2-D run: eval.tta)",
    )
    ap.add_argument("--disable-tta", action="store_true", help="nnU-Net predict without its mirroring TTA")
    ap.add_argument("--nnunet-iters", type=int, help="nnU-Net iterations per epoch (default: one pass)")
    ap.add_argument(
        "--nnunet-batch-size", type=int, help="edit nnU-Net's planned 2d batch size (default: keep its plan)"
    )
    ap.add_argument("--nnunet-val-iters", type=int, default=2, help="nnU-Net validation iterations per epoch")
    ap.add_argument("--nnunet-workers", type=int, default=2, help="nnUNet_n_proc_DA")
    ap.add_argument("--nnunet-venv", type=Path, default=REPO / ".venv-nnunet")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = args.work.resolve()
    if not (work / "split.json").is_file():
        fail(f"{work}: no split.json (run bench/nnunet/prepare.py first)")
    meta = json.loads((work / "split.json").read_text())
    if meta["dataset"] != args.dataset:
        fail(f"{work / 'split.json'}: prepared for {meta['dataset']}, not {args.dataset}")
    if args.tool == "side-by-side":
        return run_side_by_side(sys.argv[1:] if argv is None else argv)
    tools = ["nnunet", "medseg"] if args.tool == "both" else [args.tool]
    for tool in tools:  # one after the other, never at the same time
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        result = (run_nnunet if tool == "nnunet" else run_medseg)(work, meta, args)
        result.update(
            budget_minutes=args.budget,
            started=started,
            cpu_count=os.cpu_count(),
            threads=args.threads,
            cpus=sorted(os.sched_getaffinity(0)),
        )
        write_json(work / f"run_{tool}.json", result)
        print(json.dumps({k: v for k, v in result.items() if k != "phases"}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
