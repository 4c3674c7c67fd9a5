"""medseg: medical image segmentation — models, losses, metrics and the pipeline around them.

The public API, with real signatures (defined in :mod:`medseg.api`)::

    import medseg
    model = medseg.build_model("unet", 3, 2, base_width=32)
    loss = medseg.build_loss("dice_ce", mode="binary")
    cfg = medseg.load_config("configs/unet_ph2.yaml", ["train.epochs=5"])
    data = medseg.build_data(cfg.data, cfg.augment)
    result = medseg.train(cfg)
    report = medseg.evaluate(result["checkpoint"])
    medseg.predict(result["checkpoint"], "images/", "out/")

    from medseg import metrics          # medseg.metrics.dice, hd95, evaluate_case, compare_runs, ...

``import medseg`` loads neither torch nor SciPy: the functions import their layer when called,
and :mod:`medseg.metrics` is a subpackage imported on its own.
"""

from __future__ import annotations

from medseg.api import (
    build_data,
    build_loss,
    build_model,
    evaluate,
    list_losses,
    list_models,
    load_config,
    predict,
    train,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "build_data",
    "build_loss",
    "build_model",
    "evaluate",
    "list_losses",
    "list_models",
    "load_config",
    "metrics",
    "predict",
    "train",
]
