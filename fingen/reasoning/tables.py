"""Tables as text, in one format used everywhere, and numbers read from table cells.

A table is a list of rows (lists of cells); the first row is the header. Every QA source renders
its table with :func:`render_table`, so prompts, contexts and exports agree byte for byte::

    | company | payments volume ( billions ) |
    | --- | --- |
    | visa inc. ( 1 ) | $ 2457 |
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["find_row", "parse_cell_number", "render_table", "row_numbers"]

_WS = re.compile(r"\s+")
_NUMBER = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?$")


def _clean(cell: object) -> str:
    text = "" if cell is None else str(cell)
    return _WS.sub(" ", text).strip().replace("|", "\\|")


def render_table(rows: Sequence[Sequence[object]]) -> str:
    """Render rows (first row = header) as a markdown pipe table; cells stripped, ragged rows padded.

    Returns "" for an empty table. Pipes inside cells are escaped, newlines collapsed.
    """
    cleaned = [[_clean(c) for c in row] for row in rows if row is not None]
    cleaned = [row for row in cleaned if row]
    if not cleaned:
        return ""
    width = max(len(row) for row in cleaned)
    cleaned = [row + [""] * (width - len(row)) for row in cleaned]
    lines = ["| " + " | ".join(cleaned[0]) + " |", "| " + " | ".join(["---"] * width) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in cleaned[1:]]
    return "\n".join(lines)


def parse_cell_number(cell: object, *, percent_as_ratio: bool = True) -> float | None:
    """Read one number from a table cell, or None when the cell is not a single number.

    Handles ``$``, thousands separators, ``%`` (as a ratio by default, as FinQA does), accounting
    negatives ``( 1,234 )``, unicode minus, and FinQA's ``-19 ( 19 )`` / footnote ``1,234 ( a )``
    (the text before the parenthesis wins).

    >>> parse_cell_number("$ ( 1,234.5 )")
    -1234.5
    >>> parse_cell_number("12.5%")
    0.125
    """
    if isinstance(cell, bool) or cell is None:
        return None
    if isinstance(cell, int | float):
        return float(cell)
    text = str(cell).strip().replace("\u2212", "-").replace("\u2013", "-")
    negative = False
    if "(" in text:  # FinQA writes "-19 ( 19 )": keep the head; "( 19 )" alone is negative
        head, _, tail = text.partition("(")
        if head.strip(" $-"):
            text = head
        elif tail.rstrip().endswith(")"):
            negative, text = True, tail.rstrip()[:-1]
    text = text.replace("$", "").replace(",", "").replace(" ", "")
    percent = text.endswith("%")
    text = text.rstrip("%")
    if not _NUMBER.match(text):
        return None
    value = float(text)
    if percent and percent_as_ratio:
        value /= 100.0
    return -value if negative else value


def row_numbers(row: Sequence[object]) -> list[float]:
    """The numeric cells of a data row, skipping its first cell (the row name) and blanks."""
    values = [parse_cell_number(c) for c in row[1:]]
    return [v for v in values if v is not None]


def _norm_name(name: str) -> str:
    return _WS.sub(" ", name).strip().lower()


def find_row(table: Sequence[Sequence[object]], name: str) -> Sequence[object] | None:
    """The first row whose first cell equals ``name`` (exactly, then case/space-insensitively)."""
    for row in table:
        if row and str(row[0]) == name:
            return row
    wanted = _norm_name(name)
    for row in table:
        if row and _norm_name(str(row[0])) == wanted:
            return row
    return None
