"""Reading score tables by header name (never by position), with errors that name the column."""

from __future__ import annotations

import csv
from pathlib import Path

from cprl_fast.data.base import DatasetFormatError


def read_rows(path: Path) -> list[list[str]]:
    """Every row of a CSV (LF or CRLF, UTF-8 with or without BOM), the header included; text
    that is not UTF-8 is an error naming the file and the byte, never a traceback."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return list(csv.reader(fh))
    except UnicodeDecodeError as err:
        raise DatasetFormatError(
            f"{path} is not UTF-8 text (byte {err.start} is 0x{err.object[err.start]:02x}): "
            "save it as UTF-8"
        ) from None


def read_header(path: Path) -> list[str]:
    """The stripped header names of a CSV (its first line)."""
    rows = read_rows(path)
    return [h.strip() for h in rows[0]] if rows else []


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Rows of a CSV (LF or CRLF) as dicts keyed by the stripped header names."""
    lines = read_rows(path)
    if not lines:
        raise DatasetFormatError(f"{path} is empty")
    header = [h.strip() for h in lines[0]]
    rows = []
    for line, row in enumerate(lines[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise DatasetFormatError(
                f"{path}, row {line}: {len(row)} fields, but the header has {len(header)}"
            )
        rows.append(dict(zip(header, (v.strip() for v in row), strict=True)))
    return header, rows


def column(header: list[str], path: Path, *names: str) -> str:
    """The first of ``names`` (case-insensitive) present in ``header``, or an error naming it."""
    lower = {h.lower(): h for h in header}
    for n in names:
        if n.lower() in lower:
            return lower[n.lower()]
    raise DatasetFormatError(
        f"{path} has no column {names[0]!r}"
        + (f" (nor {', '.join(map(repr, names[1:]))})" if len(names) > 1 else "")
        + f"; its columns are {header}"
    )


def number(row: dict[str, str], col: str, path: Path, line: int) -> float:
    try:
        return float(row[col])
    except (KeyError, ValueError):
        raise DatasetFormatError(
            f"{path}, row {line}: column {col!r} is not a number: {row.get(col)!r}"
        ) from None
