"""Build losses from names and weighted-sum specs: ``"dice_ce"``, ``"dice:1+focal:0.5"``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import nn

from medseg.errors import ConfigError
from medseg.losses.compound import DeepSupervision, WeightedSum, with_auxiliary
from medseg.losses.regions import RegionTargets
from medseg.losses.registry import LOSSES


def parse_spec(spec: str) -> list[tuple[str, float]]:
    """``"dice:1 + focal:0.5"`` -> ``[("dice", 1.0), ("focal", 0.5)]``; a bare name has weight 1."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(
            f"loss spec must be a non-empty string such as 'dice_ce' or 'dice:1+focal:0.5'; got {spec!r}"
        )
    terms = []
    for raw in spec.split("+"):
        term = raw.strip()
        if not term:
            raise ConfigError(f"loss spec {spec!r} has an empty term (check the '+' signs)")
        name, sep, weight = term.partition(":")
        name = name.strip()
        if sep:
            try:
                w = float(weight)
            except ValueError:
                raise ConfigError(
                    f"loss spec {spec!r}: weight {weight.strip()!r} of '{name}' is not a number"
                ) from None
            if not math.isfinite(w):
                raise ConfigError(f"loss spec {spec!r}: weight of '{name}' must be finite")
        else:
            w = 1.0
        LOSSES.get(name)  # unknown names fail here with a suggestion
        terms.append((name, w))
    return terms


def _accepted(name: str) -> set[str] | None:
    """Keyword names the builder of ``name`` accepts (None: it takes ``**kwargs``)."""
    names = LOSSES.get(name).option_names()
    return None if names is None else set(names)


def build_loss(
    spec: str,
    *,
    mode: str = "multiclass",
    aux_weight: float | None = None,
    deep_supervision: bool = False,
    regions: Sequence[Sequence[int]] | None = None,
    **options: Any,
) -> nn.Module:
    """Build a loss from a registry name or a weighted sum ``"name:w + name:w"``.

    Keyword options go to every component that accepts them (``mode``, ``ignore_index`` and
    ``from_logits`` go to all); a key written ``"<name>.<option>"`` (e.g. ``"focal.gamma"``)
    goes to that component only. An option no component accepts is an error.
    ``aux_weight`` wraps the result with :func:`with_auxiliary` (PSPNet auxiliary head) and
    ``deep_supervision=True`` with :class:`DeepSupervision`. ``regions`` (label sets, with
    ``mode="multilabel"``) wraps the whole in :class:`RegionTargets`: the loss then takes label
    maps and trains one sigmoid channel per region (nnU-Net's region-based training).
    """
    terms = parse_spec(spec)
    names = [n for n, _ in terms]
    canonical = {n: LOSSES.get(n).name for n in names}
    shared, qualified = _route_options(spec, options, set(names) | set(canonical.values()))
    used: set[str] = set()
    modules = []
    for name, weight in terms:
        accepted = _accepted(name)
        term_options: dict[str, Any] = {"mode": mode}
        for key, value in shared.items():
            if accepted is None or key in accepted:
                term_options[key] = value
                used.add(key)
        term_options.update(qualified.get(name, {}))
        if canonical[name] != name:
            term_options.update(qualified.get(canonical[name], {}))
        modules.append((name, weight, LOSSES.build(name, **term_options)))
    unused = sorted(set(shared) - used)
    if unused:
        valid = sorted(set().union(*((_accepted(n) or set()) for n in names)))
        raise ConfigError(
            f"loss {spec!r} has no option {', '.join(repr(u) for u in unused)}; valid options: {', '.join(valid)}"
        )
    loss: nn.Module = modules[0][2] if len(modules) == 1 and modules[0][1] == 1.0 else WeightedSum(modules)
    return _wrap(loss, mode, aux_weight, deep_supervision, regions, options.get("ignore_index"))


def _route_options(
    spec: str, options: dict[str, Any], known: set[str]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Split ``options`` into those for every term and those for one term (``"name.option"``)."""
    qualified: dict[str, dict[str, Any]] = {}
    shared: dict[str, Any] = {}
    for key, value in options.items():
        if "." in key:
            target, _, option = key.partition(".")
            if target not in known:
                raise ConfigError(
                    f"loss option {key!r} names '{target}', which is not in the loss spec {spec!r}"
                )
            qualified.setdefault(target, {})[option] = value
        else:
            shared[key] = value
    return shared, qualified


def _wrap(
    loss: nn.Module,
    mode: str,
    aux_weight: float | None,
    deep_supervision: bool,
    regions: Sequence[Sequence[int]] | None,
    ignore_index: Any,
) -> nn.Module:
    """The auxiliary-head, deep-supervision and region wrappers, as asked."""
    if deep_supervision and aux_weight is not None:
        raise ConfigError("choose either aux_weight (auxiliary head) or deep_supervision, not both")
    if deep_supervision:
        loss = DeepSupervision(loss)
    if aux_weight is not None:
        loss = with_auxiliary(loss, aux_weight=aux_weight)
    if regions is not None:
        if mode != "multilabel":
            raise ConfigError(f"loss regions need mode 'multilabel', not {mode!r}")
        loss = RegionTargets(loss, tuple(tuple(r) for r in regions), ignore_index)
    return loss


def list_losses() -> list[str]:
    """Registered loss names (aliases such as ``bce`` and ``jaccard`` not included)."""
    return LOSSES.names()
