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
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing as mp
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from medseg.errors import ConfigError, MedsegError

STATE_FILE = "benchmark.json"
CELL_FILE = "cell.json"
# keys of the plan that must not change when a benchmark is resumed
_FIXED_KEYS = ("config", "data", "budget_s", "epochs", "folds", "seed", "overrides", "fold_method")


# --------------------------------------------------------------------------- parsing


def parse_budget(value: str | float | int | None) -> float | None:
    """``"10m"``, ``"90s"``, ``"1.5h"``, ``"600"`` or a number of seconds -> seconds."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|sec|m|min|h)?\s*", str(value))
        if not m:
            raise ConfigError(f"budget {value!r}: expected a duration such as 90s, 10m or 1.5h")
        seconds = float(m.group(1)) * {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}[m.group(2)]
    if seconds <= 0:
        raise ConfigError(f"budget {value!r}: must be positive")
    return seconds


def _split_list(value: str | list | tuple) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v).strip() for v in value]


def parse_models(value: str | list | dict) -> list[tuple[str, dict[str, Any]]]:
    """Models with per-model options: ``"unet:base_width=8:depth=3,deeplabv3plus"``, a list of
    such strings, or a mapping ``{name: {option: value}}``. Values are parsed as YAML."""
    from medseg.models import MODELS

    items: list[tuple[str, dict[str, Any]]] = []
    if isinstance(value, dict):
        items = [(str(k), dict(v or {})) for k, v in value.items()]
    else:
        for item in _split_list(value):
            name, *opts = item.split(":")
            options: dict[str, Any] = {}
            for opt in opts:
                if "=" not in opt:
                    raise ConfigError(f"model option {opt!r} in {item!r}: expected key=value")
                k, v = opt.split("=", 1)
                options[k.strip()] = yaml.safe_load(v)
            items.append((name.strip(), options))
    if not items:
        raise ConfigError("no models given")
    seen = set()
    for name, _ in items:
        MODELS.get(name)  # unknown name -> ConfigError with a suggestion
        if name in seen:
            raise ConfigError(f"model '{name}' is listed twice; give each model once")
        seen.add(name)
    return items


def parse_losses(value: str | list) -> list[str]:
    """Loss names or weighted sums (``"dice:1+focal:0.5"``), comma separated."""
    from medseg.losses import list_losses

    losses = _split_list(value)
    if not losses:
        raise ConfigError("no losses given")
    known = set(list_losses())
    for spec in losses:
        for term in spec.split("+"):
            name = term.split(":")[0].strip()
            if name not in known:
                import difflib

                close = difflib.get_close_matches(name, sorted(known), n=1)
                hint = f" Did you mean '{close[0]}'?" if close else ""
                raise ConfigError(
                    f"unknown loss '{name}' in '{spec}'.{hint} Known: {', '.join(sorted(known))}"
                )
    if len(set(losses)) != len(losses):
        raise ConfigError("a loss is listed twice")
    return losses


# --------------------------------------------------------------------------- cells


def _safe(text: str) -> str:
    """A folder-name-safe form of a loss spec; ``__`` is kept as the cell-name separator."""
    return re.sub(r"_{2,}", "_", re.sub(r"[^A-Za-z0-9_.+=-]+", "-", text)).strip("-_")


@dataclass(frozen=True)
class Cell:
    model: str
    loss: str
    fold: int | None = None

    @property
    def name(self) -> str:
        fold = "" if self.fold is None else f"__fold{self.fold}"
        return f"{self.model}__{_safe(self.loss)}{fold}"


def plan_cells(models: list[str], losses: list[str], folds: int | None = None) -> list[Cell]:
    """The grid, model-major, folds innermost."""
    fold_ids: list[int | None] = [None] if not folds else list(range(folds))
    return [Cell(m, loss, f) for m in models for loss in losses for f in fold_ids]


def _split_supports_folds() -> bool:
    from medseg.data.config import SplitConfig

    return {"folds", "fold"} <= set(SplitConfig.model_fields)


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


def cell_dir(out_dir: Path, cell: Cell) -> Path:
    return Path(out_dir) / "cells" / cell.name


def is_finished(out_dir: Path, cell: Cell) -> bool:
    return (cell_dir(out_dir, cell) / CELL_FILE).is_file()


def _atomic_json(path: Path, obj: Any) -> None:
    from medseg.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=1, default=_json_default, allow_nan=True))


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "__dataclass_fields__"):
        return asdict(o)
    return str(o)


def normalise_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The evaluator's per-case, per-class records -> ``{"case", "class", metric: value}``."""
    out = []
    for r in records:
        low = {str(k).lower(): v for k, v in r.items()}
        case = next((low[k] for k in ("case", "case_id", "id") if k in low), None)
        cls = next((low[k] for k in ("class", "class_name", "label", "class_index") if k in low), None)
        if case is None or cls is None:
            raise MedsegError(f"evaluation record without a case id or class: {sorted(r)}")
        row: dict[str, Any] = {"case": str(case), "class": str(cls)}
        for k, v in low.items():
            if k in ("case", "case_id", "id", "class", "class_name", "label", "class_index"):
                continue
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                row[k] = float(v)
        out.append(row)
    return out


def _train_throughput(history: list[dict[str, Any]]) -> float | None:
    """Images per second over the whole training (sum of images / sum of epoch seconds)."""
    secs = [float(h.get("epoch_seconds") or 0) for h in history]
    ips = [float(h.get("images_per_second") or 0) for h in history]
    total = sum(secs)
    return sum(s * i for s, i in zip(secs, ips)) / total if total > 0 else None


def _profile_size(model: Any, size: tuple[int, int]) -> tuple[int, int]:
    valid = getattr(model, "valid_input_size", None)
    if callable(valid):
        return valid(size[0]), valid(size[1])
    m = int(getattr(model, "input_multiple", 1) or 1)
    return m * math.ceil(size[0] / m), m * math.ceil(size[1] / m)


def _profile(
    out_dir: Path, model: Any, state: dict[str, Any], size: tuple[int, int], batch: int, device: str
) -> dict[str, Any]:
    """Cost of the cell's model, cached per (model, options, channels, size, batch, device)."""
    from medseg.engine.profiler import profile_module

    key = json.dumps(
        [
            state["model_name"],
            state.get("model_options", {}),
            state["in_channels"],
            state.get("out_channels"),
            list(size),
            batch,
            device,
        ],
        sort_keys=True,
    )
    path = (
        Path(out_dir)
        / "profiles"
        / f"{state['model_name']}-{hashlib.sha1(key.encode()).hexdigest()[:10]}.json"
    )
    if path.is_file():
        return json.loads(path.read_text())
    size = _profile_size(model, size)
    args = {
        "name": state["model_name"],
        "size": list(size),
        "in_channels": state["in_channels"],
        "num_classes": state.get("out_channels", state["num_classes"]),
        "batch": batch,
        "device": device,
        "options": state.get("model_options", {}),
        "steps": 5,
        "warmup": 2,
    }
    try:
        # a fresh interpreter, so that the CPU peak-memory reading (RSS growth) is not hidden by
        # memory the training already took from the system
        proc = subprocess.run(
            [sys.executable, "-c", _PROFILE_CHILD, json.dumps(args)],
            capture_output=True,
            text=True,
            timeout=1800,
            check=True,
        )
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith(_PROFILE_MARK))
        prof = json.loads(line[len(_PROFILE_MARK) :])
    except Exception:  # no subprocess possible here: profile in-process
        prof = profile_module(model, size=size, batch=batch, device=device, steps=5, warmup=2)
    _atomic_json(path, prof)
    return prof


_PROFILE_MARK = "MEDSEG_PROFILE_JSON "
_PROFILE_CHILD = (
    "import json, sys\n"
    "from medseg.engine.profiler import profile_model\n"
    "a = json.loads(sys.argv[1])\n"
    "r = profile_model(a.pop('name'), **a)\n"
    f"print({_PROFILE_MARK!r} + json.dumps(r))\n"
)


def _can_resume(last: Path, plan: dict[str, Any]) -> bool:
    if not last.is_file():
        return False
    if plan["budget_s"] is None:
        return True
    try:
        from medseg.engine.checkpoint import read_checkpoint

        return bool(read_checkpoint(last)[1]["state"].get("finished"))
    except Exception:  # an unreadable checkpoint: start the cell again
        return False


def run_cell(
    cell: Cell, plan: dict[str, Any], out_dir: str | Path, device: str | None = None
) -> dict[str, Any]:
    """Train and evaluate one cell (or return its saved result when finished)."""
    from medseg.config import load_config
    from medseg.engine.checkpoint import load_model
    from medseg.engine.evaluator import evaluate_checkpoint
    from medseg.engine.trainer import resolve_device, train

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
            _cost_info(_profile(out_dir, model, state, tuple(cfg.data.size), cfg.train.batch_size, dev))
        )
    result = {"cell": cell.name, "info": info, "history": history, "records": records}
    _atomic_json(done, result)
    return result


def _cost_info(prof: dict[str, Any]) -> dict[str, Any]:
    return {
        "gflops": prof["gflops_per_image"],
        "infer_images_per_s": prof["infer_images_per_s"],
        "peak_memory_mb": prof.get("train_peak_memory_mb"),
        "profile_train_images_per_s": prof.get("train_images_per_s"),
    }


def update_costs(out_dir: str | Path, device: str | None = None) -> int:
    """Measure the cost columns of every finished cell again (e.g. on a quieter machine or
    another device) and store them in its ``cell.json``; returns the number of cells updated.
    Rebuild the report afterwards with :func:`medseg.benchmark.report.build_report`."""
    from medseg.config import load_config
    from medseg.engine.checkpoint import load_model
    from medseg.engine.trainer import resolve_device

    out_dir = Path(out_dir)
    shutil.rmtree(out_dir / "profiles", ignore_errors=True)
    n = 0
    for path in sorted((out_dir / "cells").glob(f"*/{CELL_FILE}")):
        saved = json.loads(path.read_text())
        cfg = load_config(path.parent / "config.yaml")
        model, state = load_model(path.parent / saved["info"]["checkpoint"])
        dev = device or str(resolve_device(cfg.train.device))
        saved["info"].update(
            _cost_info(_profile(out_dir, model, state, tuple(cfg.data.size), cfg.train.batch_size, dev))
        )
        _atomic_json(path, saved)
        n += 1
    return n


# --------------------------------------------------------------------------- plan and state


def make_plan(
    *,
    models: Any,
    losses: Any,
    config: str | Path | dict | None = None,
    data: str | Path | None = None,
    budget_s: float | str | None = None,
    epochs: int | None = None,
    folds: int | None = None,
    seed: int = 0,
    overrides: list[str] | tuple[str, ...] = (),
    profile: bool = True,
    primary: str = "dice",
) -> dict[str, Any]:
    """Validate the arguments and freeze them into a JSON-able plan."""
    from medseg.config import load_config

    model_items = parse_models(models)
    loss_list = parse_losses(losses)
    budget = parse_budget(budget_s)
    if budget is None and epochs is None:
        raise ConfigError("give a time budget (e.g. --budget 10m) or a number of epochs (--epochs N)")
    if epochs is not None and epochs < 1:
        raise ConfigError("--epochs must be >= 1")
    if folds is not None and folds < 2:
        raise ConfigError("--folds must be >= 2 (leave it out for a single train/test split)")
    if isinstance(config, (str, Path)):
        config = str(Path(config).resolve())
    data = str(Path(data).resolve()) if data is not None else None
    base_overrides = list(overrides) + ([f"data.root={data}"] if data is not None else [])
    cfg = load_config(config, base_overrides)  # fails early on a bad config
    auto: list[str] = []
    if cfg.data.split.test_fraction == 0:
        from medseg.data.splits import read_split_files

        root = Path(cfg.data.root) if cfg.data.root is not None and cfg.data.format != "synthetic" else None
        if "test" not in read_split_files(root):
            auto.append("data.split.test_fraction=0.2")  # held-out cases are needed for the ranking
    plan = {
        "config": config,
        "data": data,
        "budget_s": budget,
        "epochs": epochs,
        "folds": folds,
        "seed": seed,
        "overrides": list(overrides),
        "auto_overrides": auto,
        "fold_method": None if not folds else ("kfold" if _split_supports_folds() else "repeated-holdout"),
        "models": [m for m, _ in model_items],
        "model_options": {m: o for m, o in model_items},
        "losses": loss_list,
        "profile": profile,
        "primary": primary,
    }
    return json.loads(json.dumps(plan))  # tuples -> lists, as when read back on resume


def _check_compatible(old: dict[str, Any], new: dict[str, Any], state_path: Path) -> None:
    for key in _FIXED_KEYS:
        if old.get(key) != new.get(key):
            raise MedsegError(
                f"{state_path}: this benchmark was started with {key}={old.get(key)!r}, now {new.get(key)!r}; "
                "finished cells would not be comparable. Use another output folder, or the original settings"
            )
    for m in set(old.get("models", [])) & set(new["models"]):
        if old["model_options"].get(m, {}) != new["model_options"].get(m, {}):
            raise MedsegError(
                f"{state_path}: model '{m}' was run with options {old['model_options'].get(m)}, "
                f"now {new['model_options'].get(m)}; use another output folder"
            )


def _write_state(out_dir: Path, plan: dict[str, Any], status: dict[str, dict[str, Any]]) -> None:
    cells = plan_cells(plan["models"], plan["losses"], plan["folds"])
    rows = []
    for c in cells:
        row = {"name": c.name, "model": c.model, "loss": c.loss, "fold": c.fold}
        row.update(status.get(c.name, {}))
        if is_finished(out_dir, c):
            row["status"] = "done"
        row.setdefault("status", "pending")
        rows.append(row)
    _atomic_json(
        out_dir / STATE_FILE, {"plan": plan, "cells": rows, "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
    )


# --------------------------------------------------------------------------- parallel workers

_WORKER_DEVICE: str | None = None


def _init_worker(devices, threads: int | None) -> None:
    global _WORKER_DEVICE
    _WORKER_DEVICE = devices.get() if devices is not None else None
    if threads:
        import torch

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
    budget_s: float | str | None = None,
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
    cell (``data`` overrides its ``data.root``); ``budget_s`` (seconds or ``"10m"``) and/or
    ``epochs`` bound the training of each cell; ``folds``: K-fold cross-validation when the
    data config supports it, else K repeated random hold-out splits (``plan["fold_method"]``).
    ``workers`` > 1 runs cells in a process pool; ``devices`` (e.g. ``["cuda:0", "cuda:1"]``)
    gives each worker its own device. Returns ``{"out_dir", "cells", "done", "failed",
    "ran", "skipped", "report"}``.
    """
    global _WORKER_DEVICE
    out_dir = Path(out_dir)
    plan = make_plan(
        models=models,
        losses=losses,
        config=config,
        data=data,
        budget_s=budget_s,
        epochs=epochs,
        folds=folds,
        seed=seed,
        overrides=overrides,
        profile=profile,
        primary=primary,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path = out_dir / STATE_FILE
    status: dict[str, dict[str, Any]] = {}
    if state_path.is_file():
        old = json.loads(state_path.read_text())
        _check_compatible(old["plan"], plan, state_path)
        status = {
            c["name"]: {k: v for k, v in c.items() if k in ("seconds", "error", "device")}
            for c in old.get("cells", [])
            if c.get("status") == "done"
        }
    cells = plan_cells(plan["models"], plan["losses"], plan["folds"])
    skipped = [c.name for c in cells if is_finished(out_dir, c)]
    pending = [c for c in cells if not is_finished(out_dir, c)]
    if skipped:
        log(f"{len(skipped)} of {len(cells)} cells already finished, skipping them")
    ran: list[str] = []
    failed: dict[str, str] = {}
    dist = _dist_env()

    def finished(cell: Cell, res: dict[str, Any]) -> None:
        status[cell.name] = {k: v for k, v in res.items() if k != "traceback"}
        if res["status"] == "done":
            ran.append(cell.name)
            log(f"cell {cell.name}: done in {res.get('seconds', 0):.0f} s")
        else:
            failed[cell.name] = res["error"]
            log(f"cell {cell.name}: FAILED: {res['error']}")
            (cell_dir(out_dir, cell)).mkdir(parents=True, exist_ok=True)
            (cell_dir(out_dir, cell) / "error.txt").write_text(res.get("traceback", res["error"]))
        if dist is None or dist[0] == 0:
            _write_state(out_dir, plan, status)

    if dist is None or dist[0] == 0:
        _write_state(out_dir, plan, status)
    if dist is not None:
        rank, world, local = dist
        import torch

        device = (
            f"cuda:{local}"
            if torch.cuda.is_available()
            else (devices[local % len(devices)] if devices else None)
        )
        _WORKER_DEVICE = device
        mine = [c for i, c in enumerate(cells) if i % world == rank and not is_finished(out_dir, c)]
        for cell in mine:
            log(f"[rank {rank}] cell {cell.name} on {device or 'default device'}")
            finished(cell, _run_in_worker(cell, plan, str(out_dir)))
        marker = out_dir / "ranks" / f"{rank}.done"
        marker.parent.mkdir(exist_ok=True)
        marker.write_text(json.dumps({"failed": failed}))
        if rank != 0:
            return {"out_dir": str(out_dir), "rank": rank, "ran": ran, "failed": failed}
        while not all((out_dir / "ranks" / f"{r}.done").is_file() for r in range(world)):
            time.sleep(2)
        for r in range(1, world):
            failed.update(json.loads((out_dir / "ranks" / f"{r}.done").read_text()).get("failed", {}))
        shutil.rmtree(out_dir / "ranks", ignore_errors=True)
    elif workers <= 1 or len(pending) <= 1:
        global_device = devices[0] if devices else None
        _WORKER_DEVICE = global_device
        for i, cell in enumerate(pending, 1):
            log(f"cell {i}/{len(pending)}: {cell.name}")
            status[cell.name] = {"status": "running"}
            _write_state(out_dir, plan, status)
            finished(cell, _run_in_worker(cell, plan, str(out_dir)))
    else:
        ctx = mp.get_context("spawn")
        queue = None
        n = min(workers, len(pending))
        if devices:
            queue = ctx.Queue()
            for i in range(n):
                queue.put(devices[i % len(devices)])
        threads = (
            None
            if devices and any(d.startswith("cuda") for d in devices)
            else max(1, (os.cpu_count() or 1) // n)
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
                    finished(cell, res)
    _write_state(out_dir, plan, status)
    result: dict[str, Any] = {
        "out_dir": str(out_dir),
        "cells": [c.name for c in cells],
        "ran": ran,
        "skipped": skipped,
        "failed": failed,
        "done": [c.name for c in cells if is_finished(out_dir, c)],
    }
    if report and result["done"]:
        from medseg.benchmark.report import build_report

        result["report"] = build_report(out_dir)
    return result


def load_cells(out_dir: str | Path, plan: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The saved results of the finished cells of the plan (or of every cell folder)."""
    out_dir = Path(out_dir)
    if plan is None and (out_dir / STATE_FILE).is_file():
        plan = json.loads((out_dir / STATE_FILE).read_text())["plan"]
    if plan is not None:
        paths = [
            cell_dir(out_dir, c) / CELL_FILE
            for c in plan_cells(plan["models"], plan["losses"], plan["folds"])
        ]
    else:
        paths = sorted((out_dir / "cells").glob(f"*/{CELL_FILE}"))
    return [json.loads(p.read_text()) for p in paths if p.is_file()]
