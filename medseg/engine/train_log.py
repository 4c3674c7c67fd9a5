"""What a training run writes about itself: ``log.csv``, ``curves.png``, TensorBoard scalars
and one console line per epoch."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from medseg.atomic import atomic_write, atomic_write_text

LOG_FIELDS = ["epoch", "step", "lr", "train_loss", "val_dice", "epoch_seconds", "images_per_second"]


def write_log(path: Path, history: list[dict]) -> None:
    """``history`` (one dict per epoch) as CSV with the :data:`LOG_FIELDS` columns, atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LOG_FIELDS)
    writer.writeheader()
    for row in history:
        writer.writerow({k: row.get(k, "") for k in LOG_FIELDS})
    atomic_write_text(path, buf.getvalue())


def plot_curves(history: list[dict], path: Path) -> None:
    """Training loss and validation Dice per epoch, as a PNG."""
    import matplotlib  # deferred: matplotlib is heavy and only the writing rank needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    ax[0].plot(epochs, [h["train_loss"] for h in history], marker="o", ms=3)
    ax[0].set(title="training loss", xlabel="epoch", ylabel="loss")
    val = [(h["epoch"], h["val_dice"]) for h in history if h.get("val_dice") not in (None, "")]
    if val:
        ax[1].plot(*zip(*val), marker="o", ms=3, color="tab:green")
    ax[1].set(title="validation Dice (foreground mean)", xlabel="epoch", ylabel="Dice", ylim=(0, 1))
    for a in ax:
        a.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def open_tensorboard(out: Path, enabled: bool) -> Any:
    """A TensorBoard ``SummaryWriter`` in ``out/tensorboard``, or None (disabled or not installed)."""
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter  # deferred: optional dependency
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))


def epoch_line(row: dict) -> str:
    """The console line of one epoch."""
    vd = "" if row["val_dice"] is None else f"  val Dice {row['val_dice']:.4f}"
    return f"epoch {row['epoch']}: loss {row['train_loss']:.4f}{vd}  ({row['images_per_second']:.1f} img/s)"


def log_epoch(out: Path, history: list[dict], tensorboard: Any) -> None:
    """Write the log, the curves and the TensorBoard scalars after an epoch."""
    write_log(out / "log.csv", history)
    plot_curves(history, out / "curves.png")
    if tensorboard is not None:
        row = history[-1]
        for key in ("train_loss", "val_dice", "lr", "images_per_second"):
            if row.get(key) is not None:
                tensorboard.add_scalar(key, row[key], row["epoch"])
        tensorboard.flush()
