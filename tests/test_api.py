"""The public API: `medseg.build_model`, `build_loss`, `build_data`, `load_config`, `train`,
`evaluate`, `predict` and `medseg.metrics.*` are real functions with real signatures (what IDEs,
type checkers and `help()` see), thin over the implementations, and `import medseg` stays light."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import medseg
import medseg.metrics
from medseg.models import SegmentationModel

ROOT = Path(__file__).resolve().parents[1]


def _implementations():
    from medseg.config import load_config
    from medseg.data import build_data
    from medseg.engine.evaluator import evaluate_checkpoint
    from medseg.engine.predictor import predict_folder
    from medseg.engine.trainer import train
    from medseg.losses import build_loss, list_losses
    from medseg.models import build_model, list_models

    return {
        "build_model": build_model,
        "build_loss": build_loss,
        "list_models": list_models,
        "list_losses": list_losses,
        "load_config": load_config,
        "build_data": build_data,
        "train": train,
        "evaluate": evaluate_checkpoint,
        "predict": predict_folder,
    }


def _shape(fn) -> list[tuple[str, str, object]]:
    return [(p.name, p.kind.name, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("name", sorted(_implementations()))
def test_public_functions_have_the_signatures_of_their_implementations(name):
    public = getattr(medseg, name)
    assert inspect.isfunction(public) and public.__doc__ and len(public.__doc__) > 40
    assert _shape(public) == _shape(_implementations()[name]), (
        f"medseg.{name} drifted from its implementation"
    )


def test_build_model_signature_names_its_parameters():
    params = inspect.signature(medseg.build_model).parameters
    assert list(params)[:4] == ["name", "in_channels", "num_classes", "weights"]
    assert params["weights"].kind is inspect.Parameter.KEYWORD_ONLY
    assert "*args" not in str(inspect.signature(medseg.build_model))


def test_the_public_functions_work():
    model = medseg.build_model("unet_resnet", 3, 1, backbone="resnet18", width_mult=0.125).eval()
    assert isinstance(model, SegmentationModel)
    loss = medseg.build_loss("dice_ce", mode="binary")
    assert "dice_ce" in medseg.list_losses() and "befunet_small" in medseg.list_models()
    cfg = medseg.load_config(
        {"data": {"format": "synthetic", "synthetic": {"n": 6, "size": 32}}}, ["train.epochs=1"]
    )
    data = medseg.build_data(cfg.data, cfg.augment, seed=0)
    sample = data.train[0]
    with torch.no_grad():
        logits = model(sample["image"][None])
        value = float(loss(logits, sample["mask"][None]))
    assert logits.shape[-2:] == sample["image"].shape[-2:] and value > 0


def test_no_module_getattr_hides_names():
    for module in (medseg, medseg.metrics):
        assert "__getattr__" not in vars(module)
    for name in medseg.metrics.__all__:
        assert name in vars(medseg.metrics), name
    assert medseg.metrics.compare_runs.__module__ == "medseg.metrics.compare"
    assert medseg.metrics.write_report.__module__ == "medseg.metrics.report"


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return set(out.stdout.split())


def test_import_medseg_and_the_cli_load_no_heavy_dependency():
    heavy = {"torch", "scipy", "matplotlib", "pydantic", "rich", "PIL"}
    assert not heavy & _loaded_after("import medseg")
    assert not heavy & _loaded_after("import medseg.cli")


# the packages of this refactor: no import cycles among their modules
MINE = ("medseg/metrics", "medseg/benchmark", "medseg/losses", "medseg/models", "medseg/registry.py")


def _module_imports(path: Path) -> set[str]:
    """medseg modules imported at module level (the imports that run at import time)."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("medseg"):
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("medseg"))
    return names


def test_no_import_cycles_in_metrics_benchmark_models_losses():
    files = [p for m in MINE for p in ([ROOT / m] if m.endswith(".py") else (ROOT / m).rglob("*.py"))]
    modules = {}
    for f in files:
        rel = f.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        modules[name] = f
    graph = {m: {d for d in _module_imports(f) if d in modules and d != m} for m, f in modules.items()}
    # a package __init__ is imported before its submodules: it may import them, they may not import it
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in graph[m]:
            if state.get(d) == 1:
                cycle = path[path.index(d) :] + [d] if d in path else [m, d]
                if not (d == m.rsplit(".", 1)[0] or m == d.rsplit(".", 1)[0]):
                    raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            elif d not in state:
                visit(d, [*path, d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
