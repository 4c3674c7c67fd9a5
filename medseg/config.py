"""Typed, validated configuration: YAML in, clear errors out.

A run is described by one :class:`Config`. Presets live in ``configs/*.yaml``; any
field can be overridden on the command line with ``--set section.key=value`` (the
value is parsed as YAML, so ``--set data.size=[128,128]`` works). Unknown keys and
bad values are rejected with one line naming the key.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from medseg.budget import parse_budget
from medseg.data.config import AugmentConfig, DataConfig
from medseg.errors import ConfigError


class Strict(BaseModel):
    # allow_inf_nan=False: `--lr inf` or `nan` in a preset is refused, not trained with
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


_DEVICE = re.compile(r"auto|cpu|mps|cuda(:[0-9]+)?")
SEED_MAX = 2**32 - 1  # numpy's legacy seed range; torch generators take seed * 1_000_003 + epoch


def check_device(device: str) -> str:
    """``device`` if it is auto, cpu, mps, cuda or cuda:N; else :class:`ConfigError` naming it."""
    if not _DEVICE.fullmatch(device):
        raise ConfigError(f"device '{device}': expected auto, cpu, cuda, cuda:N (N a number) or mps")
    return device


class ModelConfig(Strict):
    name: str = Field("unet", description="registered model name (`medseg list models`)")
    options: dict[str, Any] = Field(default_factory=dict, description="builder options, e.g. base_width")
    weights: Path | None = Field(None, description="local weights file to initialise from (never downloaded)")
    init_from: Path | None = Field(
        None,
        description="fine-tune: load every tensor of this weights file that fits, re-initialise the rest",
    )


class LossConfig(Strict):
    name: str = Field("dice_ce", description="loss name or weighted sum, e.g. 'dice:1+focal:0.5'")
    mode: Literal["auto", "binary", "multiclass", "multilabel"] = Field(
        "auto", description="auto: binary (one sigmoid output) for 2-class data, else multiclass"
    )
    options: dict[str, Any] = Field(default_factory=dict, description="loss keyword options")
    aux_weight: float = Field(0.4, ge=0, description="weight of an auxiliary head's loss (PSPNet)")


class OptimConfig(Strict):
    name: Literal["adamw", "sgd"] = Field("adamw", description="optimizer")
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    weight_decay: float = Field(1e-4, ge=0, description="decoupled (AdamW) or L2 (SGD) weight decay")
    momentum: float = Field(0.99, ge=0, lt=1, description="SGD momentum (the U-Net paper uses 0.99)")
    nesterov: bool = Field(True, description="SGD Nesterov momentum")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas")


class ScheduleConfig(Strict):
    name: Literal["poly", "cosine", "constant"] = Field("poly", description="learning-rate schedule")
    warmup_epochs: float = Field(0.0, ge=0, description="linear warm-up length in epochs (fractions allowed)")
    power: float = Field(0.9, gt=0, description="poly schedule exponent")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="final lr as a fraction of the peak")


class TrainConfig(Strict):
    epochs: int = Field(50, ge=1, description="number of epochs")
    batch_size: int = Field(8, ge=1, description="images per step (per process under DDP)")
    steps_per_epoch: int | None = Field(None, ge=1, description="cap on steps per epoch (None: one pass)")
    amp: Literal["none", "bf16", "fp16"] = Field("none", description="mixed precision (bf16 on CPU)")
    grad_clip: float | None = Field(None, gt=0, description="clip the gradient norm to this value")
    val_every: int = Field(1, ge=1, description="validate every N epochs")
    early_stopping: int | None = Field(None, ge=1, description="stop after N validations without improvement")
    budget_minutes: float | None = Field(
        None, gt=0, description="stop training after this wall time: minutes, or with a unit (90s, 10m, 1.5h)"
    )
    seed: int = Field(
        0, ge=0, le=SEED_MAX, description="seed for initialisation, data order and augmentation"
    )
    num_workers: int = Field(0, ge=0, description="data-loader worker processes")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, ...")
    channels_last: bool | Literal["auto"] = Field(
        "auto",
        description="memory format: auto = the model's preferred_memory_format (channels_last for the "
        "convolutional zoo, contiguous for BEFUnet); true / false force channels_last / contiguous",
    )
    log_tensorboard: bool = Field(True, description="also write TensorBoard event files")
    compile: bool = Field(
        False,
        description="torch.compile the training step (inductor; needs a C++ compiler on CPU). Off by "
        "default: measured no faster on CPU for the zoo (docs/benchmarks.md); compile time is printed "
        "apart and is not counted in the budget",
    )

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not _DEVICE.fullmatch(v):
            raise ValueError("device must be auto, cpu, cuda, cuda:N (N a number) or mps")
        return v

    @field_validator("budget_minutes", mode="before")
    @classmethod
    def _budget(cls, v: Any) -> float | None:
        try:
            return parse_budget(v)
        except ConfigError as exc:  # pydantic reports ValueErrors with the key that failed
            raise ValueError(str(exc)) from None


class EvalConfig(Strict):
    window: tuple[int, int] | None = Field(
        None, description="sliding-window size (None: whole image, resized as in training)"
    )
    overlap: float = Field(0.5, ge=0, lt=1, description="sliding-window overlap ratio")
    blend: Literal["gaussian", "constant"] = Field("gaussian", description="window blending")
    tta: bool = Field(
        False,
        description="test-time mirroring: probabilities averaged over the flips of the axes the "
        "training augmentation mirrored (medseg.engine.mirroring)",
    )
    crf: bool = Field(False, description="dense-CRF post-processing")
    surface: bool = Field(True, description="compute surface metrics (HD, HD95, ASSD, NSD)")
    nsd_tolerance: float = Field(2.0, gt=0, description="NSD tolerance (mm, or pixels without spacing)")
    empty: str = Field(
        "nan", description="empty-mask rule: nan | max | max:<mm> | legacy (see docs/metrics.md)"
    )
    hd_combine: Literal["max", "pooled"] = Field(
        "max",
        description="HD/HD95 of a class: max of the two directed distances' percentiles (max, as "
        "MONAI and DeepMind's surface-distance) or the percentile of both directions pooled "
        "(pooled, as MedPy and the MSD challenge); see docs/metrics.md",
    )
    overlays: int = Field(12, ge=0, description="number of overlay PNGs to write (worst cases first)")
    batch_size: int = Field(8, ge=1, description="slices/windows per inference batch")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="inference precision: bf16 runs the model under bfloat16 autocast"
    )
    compile: bool = Field(False, description="torch.compile the inference model (inductor)")

    @field_validator("window")
    @classmethod
    def _window(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and min(v) < 1:
            raise ValueError("window sizes must be positive")
        return v

    @field_validator("empty")
    @classmethod
    def _empty(cls, v: str) -> str:
        # deferred: importing medseg.metrics loads SciPy, which would make `import medseg.config`
        # about 5x slower (0.27 s -> 1.5 s measured) for every command that only reads a config
        from medseg.metrics.empty import resolve_empty

        resolve_empty(v)  # raises ValueError with the accepted forms
        return v


class Config(Strict):
    name: str = Field("run", description="run name")
    output_dir: Path = Field(Path("outputs/run"), description="run folder")
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    data: DataConfig = Field(
        default_factory=lambda: DataConfig(format="synthetic"),
        description="dataset (default: the built-in phantoms)",
    )
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    # (section, key) -> (the text as written, e.g. "${MEDSEG_DATA}/ph2", and its expansion)
    _unexpanded: dict[tuple[str, ...], tuple[str, str]] = PrivateAttr(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-able values; ``${VAR}`` paths in their written, unexpanded form, so
        that config.yaml and checkpoint headers never carry an environment variable's value."""
        out = self.model_dump(mode="json")
        for keys, (written, expanded) in self._unexpanded.items():
            node = out
            for k in keys[:-1]:
                node = node.get(k) or {}
            if keys[-1] in node and str(node[keys[-1]]) == str(Path(expanded)):  # not changed since
                node[keys[-1]] = written
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _format_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    value = first.get("input")
    shown = f" (got {value!r})" if first["type"] != "extra_forbidden" and not isinstance(value, dict) else ""
    more = f" [+{err.error_count() - 1} more]" if err.error_count() > 1 else ""
    return f"{source}: {loc}: {msg}{shown}{more}"


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.epochs=5")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError:
        value = raw
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set {item!r}: empty key")
    return parts, value


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    for item in overrides:
        parts, value = parse_override(item)
        node = raw
        for p in parts[:-1]:
            if node.get(p) is None:
                node[p] = {}
            if not isinstance(node[p], dict):
                raise ConfigError(f"--set {item!r}: '{p}' is not a section")
            node = node[p]
        node[parts[-1]] = value
    return raw


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(text: str) -> str:
    """``${VAR}`` and ``${VAR:-default}`` in paths, so presets can say ``${MEDSEG_DATA:-../shared/data}/ph2``."""
    return _ENV.sub(lambda m: os.environ.get(m.group(1)) or (m.group(2) or ""), text)


_ENV_PATHS: tuple[tuple[str, ...], ...] = (
    ("output_dir",),
    ("data", "root"),
    ("data", "val_root"),
    ("model", "weights"),
    ("model", "init_from"),
)


def _expand_paths(raw: dict[str, Any]) -> dict[tuple[str, ...], tuple[str, str]]:
    """Expand ``${VAR}`` in the path fields in place; returns what was expanded (see to_dict)."""
    expanded: dict[tuple[str, ...], tuple[str, str]] = {}
    for keys in _ENV_PATHS:
        node: dict[str, Any] = raw
        for k in keys[:-1]:
            child = node.get(k)
            node = child if isinstance(child, dict) else {}
        value = node.get(keys[-1])
        if isinstance(value, str) and _ENV.search(value):
            node[keys[-1]] = expand_env(value)
            expanded[keys] = (value, node[keys[-1]])
    return expanded


def _phantoms_by_default(raw: dict[str, Any]) -> None:
    """The default data set is the built-in phantoms: ``--set data.synthetic.n=12`` (a data
    section without root or format) keeps it instead of asking for data.root."""
    data = raw.get("data")
    if isinstance(data, dict) and data.get("root") is None and "format" not in data:
        data["format"] = "synthetic"


def load_config(
    source: str | Path | dict | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> Config:
    """Load a YAML file (or a dict), apply ``key=value`` overrides, validate."""
    name = "config"
    if source is None:
        raw: dict[str, Any] = {}
    elif isinstance(source, dict):
        raw = dict(source)
    else:
        path = Path(source)
        name = str(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    raw = apply_overrides(copy.deepcopy(raw), overrides)
    _phantoms_by_default(raw)
    expanded = _expand_paths(raw)
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(err, name)) from None
    cfg._unexpanded = expanded
    return cfg
