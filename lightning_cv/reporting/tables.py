"""Tables of a run (per-class figures) as CSV and Markdown files in the run directory, and as printed text.

Class names come from the data, so they are treated as hostile text: a CSV cell that a spreadsheet would run as a
formula gets a leading ``'`` (:func:`csv_text`), a Markdown cell cannot break out of its column, a printed cell is
never read as rich markup, and nothing from the data becomes a path (the file names are fixed by the caller).
"""

from __future__ import annotations

import csv
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["FORMULA_STARTS", "csv_text", "format_cell", "format_table", "print_table", "write_table"]

#: first characters that make a spreadsheet read a cell as a formula (OWASP, "CSV Injection")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value: str) -> str:
    """``value`` made safe for a CSV cell that a spreadsheet may open: a leading ``'`` when it could start a formula."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def format_cell(value: Any, digits: int = 4) -> str:
    """``value`` as table text: a float with ``digits`` decimals (NaN as ``-``), anything else as ``str`` does."""
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def _markdown_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def format_table(rows: Sequence[dict[str, Any]], digits: int = 4) -> str:
    """``rows`` (dicts with the same keys) as a Markdown table, numbers with ``digits`` decimals, NaN as ``-``."""
    if not rows:
        return ""
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_markdown_cell(format_cell(row[c], digits)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def write_table(
    rows: Sequence[dict[str, Any]], directory: str | os.PathLike[str], name: str, digits: int = 4
) -> dict[str, Path]:
    """Write ``<directory>/<name>.csv`` (full precision) and ``<name>.md``; returns both paths.

    ``name`` is the caller's fixed file name, never a value from the data; it must not name a folder.
    """
    if not name or os.sep in name or "/" in name or name in (".", ".."):
        raise ValueError(f"Expected a plain file name without folders, but got {name!r}.")
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"csv": folder / f"{name}.csv", "markdown": folder / f"{name}.md"}
    columns = list(rows[0]) if rows else []
    with paths["csv"].open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_NONNUMERIC)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([csv_text(v) if isinstance(v, str) else v for v in (row[c] for c in columns)])
    paths["markdown"].write_text(format_table(rows, digits), encoding="utf-8")
    return paths


def print_table(rows: Sequence[dict[str, Any]], title: str | None = None, digits: int = 4) -> None:
    """Print ``rows`` (dicts with the same keys) to the console: a rich table when rich is installed (as with
    ``lightning[extra]``, or this library's ``export`` extra), else :func:`format_table`'s Markdown; numbers with
    ``digits`` decimals, NaN as ``-``.

    It prints on whichever process calls it; call it on rank zero (as
    :func:`lightning_cv.models.per_class_report.report_per_class` does). Away from a terminal (a log file, a notebook
    capture) the rich table takes its natural width instead of folding long class names into 80 columns.

    Example:
        >>> print_table([{"class": "cat", "f1": 0.5}], "Per-class results")  # doctest: +SKIP
    """
    if not rows:
        return
    try:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text
    except ImportError:  # rich is optional: Lightning's `extra` and our `export` extra install it
        print(f"{title}\n{format_table(rows, digits)}" if title else format_table(rows, digits), end="", flush=True)
        return
    columns = list(rows[0])
    # Text, not str: a class name such as "[red]cat" is printed as written, never read as rich markup
    table = Table(title=Text(title) if title else None)
    for column in columns:
        numeric = all(isinstance(row[column], (int, float)) and not isinstance(row[column], bool) for row in rows)
        table.add_column(Text(column), justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*(Text(format_cell(row[column], digits)) for column in columns))
    console = Console(file=sys.stdout)
    if not console.is_terminal:  # measured on a console wide enough not to clamp the measure
        natural = Console(file=sys.stdout, width=10_000).measure(table).maximum
        console = Console(file=sys.stdout, width=max(console.width, natural))
    console.print(table)
