"""What ``medseg`` commands print: answers on stdout (rich tables on a terminal, plain rows when
piped), progress and notes through the shared console (stderr)."""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from medseg.errors import MedsegError, MedsegNote

if TYPE_CHECKING:
    from rich.console import Console


def notes_console() -> Console:
    # deferred: rich's console costs about 0.1 s, as much as the rest of `medseg --help`
    from medseg.engine.progress import console

    return console


@contextlib.contextmanager
def warnings_as_notes(enabled: bool = True) -> Iterator[None]:
    """While a command runs, show medseg's notes (:class:`MedsegNote`: a repaired NIfTI geometry,
    skipped 4-D files, ...) as one ``medseg: note:`` line on stderr, without Python's source-line
    echo; other warnings keep Python's format, and so does everything with ``enabled=False``
    (``--debug``)."""
    python_format = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 (warnings' signature)
        if issubclass(category, MedsegNote):
            print(f"medseg: note: {message}", file=sys.stderr if file is None else file)
        else:
            python_format(message, category, filename, lineno, file, line)

    if enabled:
        warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = python_format


def print_summary(result: dict) -> None:
    from medseg.metrics import summary_table  # deferred: SciPy (the metrics package)

    console = notes_console()
    console.print(
        summary_table(
            result["summary"], metrics=["dice", "iou", "sensitivity", "precision", "hd95", "assd", "nsd"]
        )
    )
    if "paths" in result:
        console.print(f"report: {result['out_dir']}")


def print_per_case(records: list[dict]) -> None:
    from rich.table import Table  # deferred: rich (see notes_console)

    table = Table(title="per-case Dice")
    classes = list(dict.fromkeys(r["class"] for r in records))
    table.add_column("case")
    for c in classes:
        table.add_column(c, justify="right")
    by_case: dict[str, dict[str, float]] = {}
    for r in records:
        by_case.setdefault(r["case"], {})[r["class"]] = r["dice"]
    for case, vals in by_case.items():
        table.add_row(case, *(f"{vals.get(c, float('nan')):.4f}" for c in classes))
    notes_console().print(table)


def print_table(table: Any) -> None:
    """The answer of ``list`` / ``info``: to stdout; a rich table on a terminal, else plain
    tab-separated rows (header first, markup stripped, never wrapped), as ``pip list`` does."""
    if sys.stdout.isatty():
        from rich.console import Console  # deferred: rich (see notes_console)

        Console().print(table)
        return
    for row in [list(r) for r in table_rows(table, header=True)]:
        print("\t".join(" ".join(cell.split()) for cell in row))  # one row per line, whatever a cell holds


def table_rows(table: Any, header: bool = False) -> list[list[str]]:
    """A rich table's cells as plain text (markup stripped), the header row first if asked."""
    from rich.text import Text  # deferred: rich (see notes_console)

    def plain(cell: Any) -> str:
        return cell.plain if isinstance(cell, Text) else Text.from_markup(str(cell)).plain

    columns = list(table.columns)
    rows = [[plain(c.header) for c in columns]] if header else []
    return rows + [[plain(cell) for cell in row] for row in zip(*(list(c.cells) for c in columns))]


def models_table() -> Any:
    # deferred: torch (the model zoo); rich.table loads with the console (see notes_console)
    import torch
    from rich.table import Table

    from medseg.models import MODELS, count_parameters

    table = Table(title="models (parameters with in_channels=3, num_classes=2, default options)")
    for col in ("name", "parameters", "input multiple", "summary", "paper"):
        table.add_column(col, justify="right" if col == "parameters" else "left")
    for entry in MODELS:
        try:  # meta tensors: count parameters without allocating them
            with torch.device("meta"):
                model = entry.build(in_channels=3, num_classes=2)
        except (NotImplementedError, RuntimeError, MedsegError):
            model = entry.build(in_channels=3, num_classes=2)
        table.add_row(
            entry.name,
            f"{count_parameters(model) / 1e6:.2f} M",
            str(model.input_multiple),
            entry.meta.get("summary", ""),
            entry.meta.get("paper", ""),
        )
    return table


def losses_table() -> Any:
    # deferred: torch (the loss zoo); rich.table loads with the console (see notes_console)
    from rich.table import Table

    from medseg.losses import LOSSES

    table = Table(title="losses")
    for col in ("name", "aliases", "summary", "paper"):
        table.add_column(col)
    for entry in LOSSES:
        table.add_row(
            entry.name,
            ", ".join(LOSSES.aliases_of(entry.name)),
            entry.meta.get("summary", ""),
            entry.meta.get("paper", ""),
        )
    return table
