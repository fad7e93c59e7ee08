"""print_table: a rich table (or Markdown without rich), numbers to 4 decimals, NaN as "-", names printed as written."""

import math
import sys

import pytest

from lightning_cv.reporting import format_table, print_table
from lightning_cv.reporting.tables import format_cell

ROWS = [
    {"class": "[bold]cat[/bold]", "support": 12, "precision": 2 / 3, "recall": math.nan, "most_confused_with": "dog"},
    {"class": "dog", "support": 3, "precision": 1.0, "recall": 0.123456, "most_confused_with": ""},
]


def test_format_cell():
    assert [format_cell(v) for v in (2 / 3, math.nan, 7, "x", 1.0)] == ["0.6667", "-", "7", "x", "1.0000"]
    assert format_cell(2 / 3, 2) == "0.67"


def test_rich_table_with_title_decimals_dashes_and_names_as_written(capsys):
    print_table(ROWS, "Per-class results on the test split")
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].strip() == "Per-class results on the test split"
    assert "┃ class" in out and "most_confused_with" in out  # a rich table, its headers whole
    cat = next(line for line in lines if "cat" in line)
    assert "[bold]cat[/bold]" in cat  # rich markup in a class name is not interpreted
    assert [cell.strip() for cell in cat.strip("│ ").split("│")] == ["[bold]cat[/bold]", "12", "0.6667", "-", "dog"]
    dog = next(line for line in lines if line.startswith("│ dog "))
    assert "1.0000" in dog and "0.1235" in dog


def test_a_long_table_is_not_folded_away_from_a_terminal(capsys):
    name = "a class name much longer than eighty columns allow once the other columns are drawn beside it"
    print_table([{"class": name, "support": 1, "precision": 0.5, "recall": 0.5, "f1": 0.5}], "wide")
    assert name in capsys.readouterr().out


def test_without_rich_the_markdown_table_is_printed(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "rich.console", None)  # `from rich.console import ...` raises ImportError
    print_table(ROWS, "Per-class results")
    assert capsys.readouterr().out == "Per-class results\n" + format_table(ROWS)
    print_table(ROWS)
    assert capsys.readouterr().out == format_table(ROWS)


@pytest.mark.parametrize("rich", [True, False])
def test_no_rows_prints_nothing(capsys, monkeypatch, rich):
    if not rich:
        monkeypatch.setitem(sys.modules, "rich.console", None)
    print_table([], "title")
    assert capsys.readouterr().out == ""
