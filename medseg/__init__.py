"""medseg: medical image segmentation — models, losses, metrics and the pipeline around them."""

from __future__ import annotations

__version__ = "0.1.0"


def build_model(*args, **kwargs):
    from medseg.models import build_model as _build

    return _build(*args, **kwargs)


def build_loss(*args, **kwargs):
    from medseg.losses import build_loss as _build

    return _build(*args, **kwargs)


def list_models() -> list[str]:
    from medseg.models import list_models as _list

    return _list()


def list_losses() -> list[str]:
    from medseg.losses import list_losses as _list

    return _list()


def __getattr__(name: str):
    if name == "metrics":
        import importlib

        return importlib.import_module("medseg.metrics")
    raise AttributeError(name)


__all__ = ["build_model", "build_loss", "list_models", "list_losses", "metrics", "__version__"]
