"""``medseg benchmark``: train and evaluate every model x loss cell on one dataset under the
same budget and seed, then rank them.

Layout of ``OUT``::

    benchmark.json                 the plan and the status of every cell (rewritten atomically)
    cells/<model>__<loss>[__fold<k>]/
        config.yaml checkpoints/ log.csv curves.png   a normal medseg run folder
        eval/test/...                                  the evaluator's report on the held-out split
        cell.json                                      per-case records, history, costs: written
                                                       last; its presence marks the cell finished
    profiles/<model>-<hash>.json   parameters, GFLOPs, throughput, memory (one per model setting)
    leaderboard.{md,csv,json,html}, bars.png, pareto.png, curves.png

A killed benchmark restarts where it stopped: finished cells are skipped; an unfinished
cell resumes from its last checkpoint when training is epoch-bounded (the trainer's
resume is exact), or restarts when it is time-bounded (a budget cannot be resumed
exactly) unless its training had already finished. Cells run one after another, in a
pool of processes (``workers``; with ``devices`` one device per worker), or one per rank
under ``torchrun`` (each rank trains its own cells on ``cuda:LOCAL_RANK`` without DDP).
A pool worker whose benchmark process is killed exits within a second (``parent_watch``).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import torch

from medseg.benchmark.cells import (
    CELL_FILE,
    STATE_FILE,
    Cell,
    cell_dir,
    is_finished,
    normalise_records,
    plan_cells,
    write_json,
    write_state,
)
from medseg.benchmark.costs import cost_columns, profile_cell
from medseg.benchmark.parent_watch import exit_when_parent_dies
from medseg.benchmark.plan import check_compatible, make_plan
from medseg.benchmark.report import build_report
from medseg.config import load_config
from medseg.engine.checkpoint import load_model, read_checkpoint
from medseg.engine.evaluator import evaluate_checkpoint
from medseg.engine.trainer import resolve_device, train


def cell_overrides(cell: Cell, plan: dict[str, Any], cell_dir: Path, device: str | None) -> list[str]:
    """``--set`` overrides that turn the base config into this cell's run; the user's own
    overrides come last and win."""
    out = [
        f"name={cell.name}",
        f"output_dir={cell_dir}",
        f"model.name={cell.model}",
        f"model.options={json.dumps(plan['model_options'].get(cell.model, {}))}",
        f"loss.name={cell.loss}",
        f"train.seed={plan['seed']}",
        "train.log_tensorboard=false",
    ]
    if plan["data"] is not None:
        out.append(f"data.root={plan['data']}")
    out += plan.get("auto_overrides", [])
    if plan["budget_s"] is not None:
        out.append(f"train.budget_minutes={plan['budget_s'] / 60:.6g}")
        if plan["epochs"] is None:
            out.append("train.epochs=100000")  # the budget ends training
    if plan["epochs"] is not None:
        out.append(f"train.epochs={plan['epochs']}")
    if cell.fold is not None:
        if plan["fold_method"] == "kfold":
            out += [f"data.split.folds={plan['folds']}", f"data.split.fold={cell.fold}"]
        else:  # repeated random hold-out: one split seed per "fold"
            out.append(f"data.split.seed={plan['seed'] + cell.fold}")
    if device is not None:
        out.append(f"train.device={device}")
    return out + list(plan["overrides"])


def image_size(cfg: Any) -> tuple[int, int]:
    """A benchmark cell's 2-D training size ``(H, W)``."""
    if len(cfg.data.size) != 2:
        raise ValueError(f"benchmark cells are 2-D; data.size is {list(cfg.data.size)}")
    return int(cfg.data.size[0]), int(cfg.data.size[1])


def _train_throughput(history: list[dict[str, Any]]) -> float | None:
    """Images per second over the whole training (sum of images / sum of epoch seconds)."""
    secs = [float(h.get("epoch_seconds") or 0) for h in history]
    ips = [float(h.get("images_per_second") or 0) for h in history]
    total = sum(secs)
    return sum(s * i for s, i in zip(secs, ips)) / total if total > 0 else None


def _can_resume(last: Path, plan: dict[str, Any]) -> bool:
    if not last.is_file():
        return False
    if plan["budget_s"] is None:
        return True
    try:
        return bool(read_checkpoint(last)[1]["state"].get("finished"))
    except Exception:  # an unreadable checkpoint: start the cell again
        return False


def run_cell(
    cell: Cell, plan: dict[str, Any], out_dir: str | Path, device: str | None = None
) -> dict[str, Any]:
    """Train and evaluate one cell (or return its saved result when finished)."""
    out_dir = Path(out_dir)
    cdir = cell_dir(out_dir, cell)
    done = cdir / CELL_FILE
    if done.is_file():
        return json.loads(done.read_text())
    cfg = load_config(plan["config"], cell_overrides(cell, plan, cdir, device))
    resume = _can_resume(cdir / "checkpoints" / "last.safetensors", plan)
    if not resume and cdir.exists():
        shutil.rmtree(cdir)  # a half-trained, time-bounded cell starts again
    t0 = time.monotonic()
    trained = train(cfg, resume=resume)
    train_wall = time.monotonic() - t0
    dev = str(resolve_device(cfg.train.device))
    t1 = time.monotonic()
    ev = evaluate_checkpoint(trained["checkpoint"], split="test", out_dir=cdir / "eval" / "test", device=dev)
    eval_wall = time.monotonic() - t1
    records = normalise_records(ev["records"])
    model, state = load_model(trained["checkpoint"])
    history = trained["history"]
    info: dict[str, Any] = {
        "model": cell.model,
        "loss": cell.loss,
        "fold": cell.fold,
        "params": sum(p.numel() for p in model.parameters()),
        "epochs": len(history),
        "stop_reason": trained.get("stop_reason"),
        "best_val_dice": trained.get("best_val_dice"),
        # time spent in training steps (robust to resuming); wall time of this process's train() call
        "train_seconds": sum(float(h.get("epoch_seconds") or 0) for h in history),
        "train_wall_seconds": train_wall,
        "eval_seconds": eval_wall,
        "train_images_per_s": _train_throughput(history),
        "test_cases": len({r["case"] for r in records}),
        "device": dev,
        "checkpoint": os.path.relpath(trained["checkpoint"], cdir),
    }
    if plan.get("profile", True):
        info.update(
            cost_columns(profile_cell(out_dir, model, state, image_size(cfg), cfg.train.batch_size, dev))
        )
    result = {"cell": cell.name, "info": info, "history": history, "records": records}
    if cell.fold is not None and plan.get("fold_method") == "kfold":
        result["oof_records"] = _out_of_fold_records(trained["checkpoint"], cdir, dev)
    write_json(done, result)
    return result


def _out_of_fold_records(checkpoint: str | Path, cdir: Path, device: str) -> list[dict[str, Any]]:
    """Per-case records of a K-fold cell's validation cases, scored with the fold's *last*
    checkpoint (the best one was chosen on these very cases) and without post-processing: every
    non-test case is scored exactly once over the K folds, so the cross-validated leaderboard
    compares models on all of them, not only on the fixed test cases."""
    last = Path(checkpoint).parent / "last.safetensors"
    ev = evaluate_checkpoint(
        last if last.is_file() else checkpoint,
        split="val",
        out_dir=cdir / "eval" / "oof",
        device=device,
        postprocess=False,
    )
    return normalise_records(ev["records"])


def update_costs(out_dir: str | Path, device: str | None = None) -> int:
    """Measure the cost columns of every finished cell again (e.g. on a quieter machine or
    another device) and store them in its ``cell.json``; returns the number of cells updated.
    Rebuild the report afterwards with :func:`medseg.benchmark.report.build_report`."""
    out_dir = Path(out_dir)
    shutil.rmtree(out_dir / "profiles", ignore_errors=True)
    n = 0
    for path in sorted((out_dir / "cells").glob(f"*/{CELL_FILE}")):
        saved = json.loads(path.read_text())
        cfg = load_config(path.parent / "config.yaml")
        model, state = load_model(path.parent / saved["info"]["checkpoint"])
        dev = device or str(resolve_device(cfg.train.device))
        saved["info"].update(
            cost_columns(profile_cell(out_dir, model, state, image_size(cfg), cfg.train.batch_size, dev))
        )
        write_json(path, saved)
        n += 1
    return n


# --------------------------------------------------------------------------- plan and state


# --------------------------------------------------------------------------- parallel workers

_WORKER_DEVICE: str | None = None


def _init_worker(devices, threads: int | None) -> None:
    global _WORKER_DEVICE
    exit_when_parent_dies()
    _WORKER_DEVICE = devices.get() if devices is not None else None
    if threads:
        torch.set_num_threads(threads)


def _run_in_worker(cell: Cell, plan: dict[str, Any], out_dir: str) -> dict[str, Any]:
    t0 = time.monotonic()
    try:
        run_cell(cell, plan, out_dir, _WORKER_DEVICE)
        return {"status": "done", "seconds": round(time.monotonic() - t0, 1), "device": _WORKER_DEVICE}
    except Exception as exc:
        return {
            "status": "failed",
            "error": f"{type(exc).__name__}: {exc}",
            "device": _WORKER_DEVICE,
            "traceback": traceback.format_exc(limit=8),
        }


def _dist_env() -> tuple[int, int, int] | None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    # each rank trains whole cells on its own device: hide torchrun from the trainer's DDP
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK"):
        os.environ.pop(key, None)
    return rank, world, local


def run_benchmark(
    out_dir: str | Path,
    *,
    models: Any,
    losses: Any,
    config: str | Path | dict | None = None,
    data: str | Path | None = None,
    budget: float | str | None = None,
    epochs: int | None = None,
    folds: int | None = None,
    seed: int = 0,
    overrides: list[str] | tuple[str, ...] = (),
    workers: int = 1,
    devices: list[str] | None = None,
    profile: bool = True,
    primary: str = "dice",
    report: bool = True,
    log=print,
) -> dict[str, Any]:
    """Run (or resume) the benchmark grid in ``out_dir`` and write the report.

    ``models``: ``"unet:base_width=8,deeplabv3plus"`` (see :func:`parse_models`); ``losses``:
    ``"dice_ce,focal_tversky"``; ``config``: a YAML preset or dict used as the base of every
    cell (``data`` overrides its ``data.root``); ``budget`` (per cell: minutes, or ``"90s"``, ``"10m"``, ``"1.5h"``) and/or
    ``epochs`` bound the training of each cell; ``folds``: K-fold cross-validation when the
    data config supports it, else K repeated random hold-out splits (``plan["fold_method"]``).
    ``workers`` > 1 runs cells in a process pool; ``devices`` (e.g. ``["cuda:0", "cuda:1"]``)
    gives each worker its own device. Returns ``{"out_dir", "cells", "done", "failed",
    "ran", "skipped", "report"}``.
    """
    out_dir = Path(out_dir)
    plan = make_plan(
        models=models,
        losses=losses,
        config=config,
        data=data,
        budget=budget,
        epochs=epochs,
        folds=folds,
        seed=seed,
        overrides=overrides,
        profile=profile,
        primary=primary,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    status = _previous_status(out_dir / STATE_FILE, plan)
    cells, skipped, pending = _split_finished(out_dir, plan, log)
    dist = _dist_env()
    progress = _Progress(out_dir, plan, status, dist is None or dist[0] == 0, log)
    if progress.writes_state:
        write_state(out_dir, plan, status)
    if dist is not None:
        if not _run_ranks(cells, plan, out_dir, dist, devices, progress, log):
            return {"out_dir": str(out_dir), "rank": dist[0], "ran": progress.ran, "failed": progress.failed}
    elif workers <= 1 or len(pending) <= 1:
        _run_serial(pending, plan, out_dir, devices, progress, log)
    else:
        _run_pool(pending, plan, out_dir, workers, devices, progress)
    write_state(out_dir, plan, status)
    return _summary(out_dir, cells, skipped, progress, report)


def _split_finished(out_dir: Path, plan: dict[str, Any], log) -> tuple[list[Cell], list[str], list[Cell]]:
    """All the plan's cells, the names of those already finished, and those still to run."""
    cells = plan_cells(plan["models"], plan["losses"], plan["folds"])
    skipped = [c.name for c in cells if is_finished(out_dir, c)]
    pending = [c for c in cells if not is_finished(out_dir, c)]
    if skipped:
        log(f"{len(skipped)} of {len(cells)} cells already finished, skipping them")
    return cells, skipped, pending


def _summary(
    out_dir: Path, cells: list[Cell], skipped: list[str], progress: _Progress, report: bool
) -> dict[str, Any]:
    """``run_benchmark``'s result, with the report built when at least one cell is done."""
    result: dict[str, Any] = {
        "out_dir": str(out_dir),
        "cells": [c.name for c in cells],
        "ran": progress.ran,
        "skipped": skipped,
        "failed": progress.failed,
        "done": [c.name for c in cells if is_finished(out_dir, c)],
    }
    if report and result["done"]:
        result["report"] = build_report(out_dir)
    return result


def _previous_status(state_path: Path, plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The finished cells recorded by an earlier run of the same plan (checked compatible)."""
    if not state_path.is_file():
        return {}
    old = json.loads(state_path.read_text())
    check_compatible(old["plan"], plan, state_path)
    return {
        c["name"]: {k: v for k, v in c.items() if k in ("seconds", "error", "device")}
        for c in old.get("cells", [])
        if c.get("status") == "done"
    }


class _Progress:
    """The benchmark's progress: every cell's status (mirrored in the state file when
    ``writes_state``), the cells run in this call and the cells that failed."""

    def __init__(
        self, out_dir: Path, plan: dict[str, Any], status: dict[str, dict[str, Any]], writes_state: bool, log
    ) -> None:
        self.out_dir, self.plan, self.status = out_dir, plan, status
        self.writes_state, self.log = writes_state, log
        self.ran: list[str] = []
        self.failed: dict[str, str] = {}

    def finished(self, cell: Cell, res: dict[str, Any]) -> None:
        """Record one cell's outcome; a failed cell gets its traceback in ``error.txt``."""
        self.status[cell.name] = {k: v for k, v in res.items() if k != "traceback"}
        if res["status"] == "done":
            self.ran.append(cell.name)
            self.log(f"cell {cell.name}: done in {res.get('seconds', 0):.0f} s")
        else:
            self.failed[cell.name] = res["error"]
            self.log(f"cell {cell.name}: FAILED: {res['error']}")
            (cell_dir(self.out_dir, cell)).mkdir(parents=True, exist_ok=True)
            (cell_dir(self.out_dir, cell) / "error.txt").write_text(res.get("traceback", res["error"]))
        if self.writes_state:
            write_state(self.out_dir, self.plan, self.status)


def _run_ranks(
    cells: list[Cell],
    plan: dict[str, Any],
    out_dir: Path,
    dist: tuple[int, int, int],
    devices: list[str] | None,
    progress: _Progress,
    log,
) -> bool:
    """Under ``torchrun``: run this rank's share of the cells; rank 0 then waits for the
    others and gathers their failures. Returns whether this rank goes on to the report."""
    global _WORKER_DEVICE
    rank, world, local = dist
    device = (
        f"cuda:{local}" if torch.cuda.is_available() else (devices[local % len(devices)] if devices else None)
    )
    _WORKER_DEVICE = device
    mine = [c for i, c in enumerate(cells) if i % world == rank and not is_finished(out_dir, c)]
    for cell in mine:
        log(f"[rank {rank}] cell {cell.name} on {device or 'default device'}")
        progress.finished(cell, _run_in_worker(cell, plan, str(out_dir)))
    marker = out_dir / "ranks" / f"{rank}.done"
    marker.parent.mkdir(exist_ok=True)
    marker.write_text(json.dumps({"failed": progress.failed}))
    if rank != 0:
        return False
    while not all((out_dir / "ranks" / f"{r}.done").is_file() for r in range(world)):
        time.sleep(2)
    for r in range(1, world):
        progress.failed.update(json.loads((out_dir / "ranks" / f"{r}.done").read_text()).get("failed", {}))
    shutil.rmtree(out_dir / "ranks", ignore_errors=True)
    return True


def _run_serial(
    pending: list[Cell],
    plan: dict[str, Any],
    out_dir: Path,
    devices: list[str] | None,
    progress: _Progress,
    log,
) -> None:
    """Run the pending cells one after another in this process, on the first device."""
    global _WORKER_DEVICE
    _WORKER_DEVICE = devices[0] if devices else None
    for i, cell in enumerate(pending, 1):
        log(f"cell {i}/{len(pending)}: {cell.name}")
        progress.status[cell.name] = {"status": "running"}
        write_state(out_dir, plan, progress.status)
        progress.finished(cell, _run_in_worker(cell, plan, str(out_dir)))


def _run_pool(
    pending: list[Cell],
    plan: dict[str, Any],
    out_dir: Path,
    workers: int,
    devices: list[str] | None,
    progress: _Progress,
) -> None:
    """Run the pending cells in a pool of spawned processes, one device per worker when
    ``devices`` is given (else the CPU threads are shared out among the workers)."""
    ctx = mp.get_context("spawn")
    queue = None
    n = min(workers, len(pending))
    if devices:
        queue = ctx.Queue()
        for i in range(n):
            queue.put(devices[i % len(devices)])
    threads = (
        None if devices and any(d.startswith("cuda") for d in devices) else max(1, (os.cpu_count() or 1) // n)
    )
    with ProcessPoolExecutor(
        max_workers=n, mp_context=ctx, initializer=_init_worker, initargs=(queue, threads)
    ) as pool:
        futures = {pool.submit(_run_in_worker, c, plan, str(out_dir)): c for c in pending}
        remaining = set(futures)
        while remaining:
            done_now, remaining = wait(remaining, return_when=FIRST_COMPLETED)
            for fut in done_now:
                cell = futures[fut]
                try:
                    res = fut.result()
                except Exception as exc:  # the worker process died
                    res = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
                progress.finished(cell, res)
