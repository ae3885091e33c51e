"""Reading score tables by header name (never by position), with errors that name the column."""

from __future__ import annotations

import csv
import io
import itertools
from pathlib import Path

from cprl_fast.data.base import DatasetFormatError
from cprl_fast.io import open_regular_file


def read_rows(path: Path, first_only: bool = False) -> list[list[str]]:
    """Every row of a CSV (LF or CRLF, UTF-8 with or without BOM), the header included (only
    the header where ``first_only``); a file that is not regular
    (:func:`cprl_fast.io.open_regular_file`: a FIFO is never waited on), text that is not
    UTF-8, or text the ``csv`` module cannot parse (a field over its 128 kB limit) is an error
    naming the file and where, never a traceback."""
    with open_regular_file(path, "score file") as raw, \
            io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as fh:  # fmt: skip
        reader = csv.reader(fh)
        try:
            return list(itertools.islice(reader, 1 if first_only else None))
        except csv.Error as err:
            raise DatasetFormatError(f"{path} is not a CSV table this library can read "
                                     f"(line {reader.line_num}: {err})") from None  # fmt: skip
        except UnicodeDecodeError as err:
            raise DatasetFormatError(
                f"{path} is not UTF-8 text (byte {err.start} is "
                f"0x{err.object[err.start]:02x}): save it as UTF-8"
            ) from None


def read_header(path: Path) -> list[str]:
    """The stripped header names of a CSV (its first line; the rest is not read)."""
    rows = read_rows(path, first_only=True)
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


def listed_file(base: Path, name: str, where: str) -> Path:
    """``base / name`` for an image that a score table (``where``: the table and its row)
    lists by ``name``: a relative path below ``base``, never an absolute path, a ``..`` part or
    an empty name (a table is data: it never points the loader outside the dataset's folder),
    else a :class:`DatasetFormatError` naming the table, the row and the name."""
    rel = Path(name)
    if not name.strip() or rel.is_absolute() or ".." in rel.parts:
        raise DatasetFormatError(f"{where}: image name {name!r} must be a path relative to the "
                                 f"dataset's folder {base}, without '..'")  # fmt: skip
    return base / rel


def number(row: dict[str, str], col: str, path: Path, line: int) -> float:
    try:
        return float(row[col])
    except (KeyError, ValueError):
        raise DatasetFormatError(
            f"{path}, row {line}: column {col!r} is not a number: {row.get(col)!r}"
        ) from None
