"""What the hub's spreadsheet imports share: reading an .xlsx, cell text, row errors.

Member and catalog imports (`hub.member_io`, `hub.catalog_io`) read the first sheet the
same way and report problems as (row, column, message); each keeps its own columns and
rules.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import openpyxl
from openpyxl.utils.exceptions import InvalidFileException

__all__ = ["RowError", "blank_row", "cell_text", "read_xlsx"]


@dataclass(frozen=True)
class RowError:
    """One problem: the sheet's row number (the header is row 1), the column as headed, what is wrong."""

    row: int
    column: str
    message: str


def cell_text(value: Any) -> str:
    """A cell as text: empty for None, 13800138000.0 from Excel as "13800138000", trimmed."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def blank_row(row: Sequence[Any]) -> bool:
    """True when every cell is empty (spreadsheets keep formatted but empty rows)."""
    return all(cell_text(v) == "" for v in row)


def read_xlsx(data: bytes, *, max_rows: int, what: str, error: type[ValueError]) -> list[Sequence[Any]]:
    """The first sheet's rows as values, header included (blocking: call in a thread).

    Raises `error` for an unreadable file or more than `max_rows` rows of `what` after the header.
    """
    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError, ValueError) as err:
        raise error(f"not a readable .xlsx file ({err})") from err
    try:
        rows: list[Sequence[Any]] = []
        for row in book.worksheets[0].iter_rows(values_only=True):
            rows.append(row)
            if len(rows) > max_rows + 1:
                raise error(f"at most {max_rows} {what} per file; split the file")
        return rows
    finally:
        book.close()
