"""A benchmark's plan: the command-line arguments (models with options, losses, budget, epochs,
folds, seed, overrides) checked and frozen into JSON, and the check that a resumed benchmark
keeps the settings its finished cells were run with."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

import yaml

from medseg.budget import parse_budget
from medseg.config import load_config
from medseg.data.config import SplitConfig
from medseg.data.splits import read_split_files
from medseg.errors import ConfigError, MedsegError
from medseg.losses import list_losses
from medseg.models import MODELS

_FIXED_KEYS = ("config", "data", "budget_s", "epochs", "folds", "seed", "overrides", "fold_method")


def _split_list(value: str | list | tuple) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v).strip() for v in value]


def parse_models(value: str | list | dict) -> list[tuple[str, dict[str, Any]]]:
    """Models with per-model options: ``"unet:base_width=8:depth=3,deeplabv3plus"``, a list of
    such strings, or a mapping ``{name: {option: value}}``. Values are parsed as YAML."""
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
    losses = _split_list(value)
    if not losses:
        raise ConfigError("no losses given")
    known = set(list_losses())
    for spec in losses:
        for term in spec.split("+"):
            name = term.split(":")[0].strip()
            if name not in known:
                close = difflib.get_close_matches(name, sorted(known), n=1)
                hint = f" Did you mean '{close[0]}'?" if close else ""
                raise ConfigError(
                    f"unknown loss '{name}' in '{spec}'.{hint} Known: {', '.join(sorted(known))}"
                )
    if len(set(losses)) != len(losses):
        raise ConfigError("a loss is listed twice")
    return losses


def _split_supports_folds() -> bool:
    return {"folds", "fold"} <= set(SplitConfig.model_fields)


def make_plan(
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
    profile: bool = True,
    primary: str = "dice",
) -> dict[str, Any]:
    """Validate the arguments and freeze them into a JSON-able plan. ``budget``: training wall
    time per cell, minutes or with a unit (``"90s"``, ``"10m"``, ``"1.5h"``; see
    :func:`medseg.budget.parse_budget`); the plan stores it as ``budget_s`` in seconds."""
    model_items = parse_models(models)
    loss_list = parse_losses(losses)
    minutes = parse_budget(budget)
    if minutes is None and epochs is None:
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
        root = Path(cfg.data.root) if cfg.data.root is not None and cfg.data.format != "synthetic" else None
        if "test" not in read_split_files(root):
            auto.append("data.split.test_fraction=0.2")  # held-out cases are needed for the ranking
    plan = {
        "config": config,
        "data": data,
        "budget_s": None if minutes is None else round(minutes * 60, 6),  # seconds, as before
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


def check_compatible(old: dict[str, Any], new: dict[str, Any], state_path: Path) -> None:
    """Refuse to resume a benchmark folder whose finished cells were run with other settings."""
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
