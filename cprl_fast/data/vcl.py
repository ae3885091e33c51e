"""VCL@FER (Zaric et al. 2011): 23 scenes x 4 distortions x 6 levels = 552 distorted images.

Images ``IMG_XX_<TYPE>_<L>.bmp`` (``.jpg`` for JPG) anywhere under the root; references
``IMG_XX.bmp`` are not scored. Scores: a CSV of image name and MOS (the spreadsheet
``results.xls`` must be saved as CSV first), with a header naming the columns (``image`` /
``image_name`` / ``name`` / ``file``, and ``mos`` / ``score``) or without a header (name, MOS).
``q = MOS / 100``; scene ``IMG_XX``; type and level from the name (level 1 is the mildest).
"""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

from cprl_fast.data.base import DatasetFormatError, Item, register
from cprl_fast.data.csvs import column, number, read_csv, read_rows
from cprl_fast.io import open_regular_file

log = logging.getLogger("cprl_fast.data")

PATTERN = re.compile(r"IMG_(\d{2})_(AWGN|BLU|J2K|JPG)_([1-6])", re.IGNORECASE)
NAME_COLUMNS = ("image", "image_name", "img_name", "name", "file", "filename")
SCORE_COLUMNS = ("mos", "score")


#: The bytes of each candidate file read to find its first row.
FIRST_ROW_BYTES = 1 << 16


def _first_row(path: Path) -> list[str]:
    """The first row of a CSV or text file, from its first :data:`FIRST_ROW_BYTES` (text
    not UTF-8 decoded with replacements: the search only looks for names)."""
    with open_regular_file(path, "score file") as fh:  # a FIFO is refused, never waited on
        head = fh.read(FIRST_ROW_BYTES).decode("utf-8-sig", errors="replace")
    lines = head.splitlines()
    return next(csv.reader(lines[:1]), []) if lines else []


def _score_file(root: Path) -> Path:
    for path in sorted(root.rglob("*.csv")) + sorted(root.rglob("*.txt")):
        try:
            first = _first_row(path)
        except OSError:  # a folder, FIFO or device so named, or unreadable: not the table
            continue
        if any(PATTERN.search(c) for c in first) or {c.strip().lower() for c in first} & set(
            NAME_COLUMNS
        ):
            return path
    hint = " (found results.xls: save it as CSV)" if list(root.rglob("results.xls")) else ""
    raise FileNotFoundError(f"no VCL@FER score CSV (image name, MOS) under {root}{hint}")


def _scores(path: Path) -> dict[str, float]:
    """Image key -> MOS. A name that is not ``IMG_XX_<TYPE>_<L>`` (a reference image, a note) is
    skipped and counted in a warning; a name listed twice with different MOS is an error."""
    lines = read_rows(path)
    first = lines[0] if lines else []
    pairs: list[tuple[int, str, float]] = []  # (row, name, MOS)
    if len(first) >= 2 and PATTERN.search(first[0]):  # no header: name, MOS
        for i, r in enumerate(lines, start=1):
            if not r:
                continue
            try:
                pairs.append((i, r[0].strip(), float(r[1])))
            except (ValueError, IndexError):
                raise DatasetFormatError(f"{path}, row {i}: expected name, MOS; got {r}") from None
    else:
        header, rows = read_csv(path)
        name = column(header, path, *NAME_COLUMNS)
        mos = column(header, path, *SCORE_COLUMNS)
        pairs = [(i + 2, r[name], number(r, mos, path, i + 2)) for i, r in enumerate(rows)]
    out: dict[str, float] = {}
    skipped = []
    for row, name, value in pairs:
        key = Path(name).stem.upper()
        if PATTERN.fullmatch(key) is None:
            skipped.append(name)
            continue
        if key in out and out[key] != value:
            raise DatasetFormatError(
                f"{path}, row {row}: {key} is listed twice with different MOS "
                f"({out[key]} and {value})"
            )
        out[key] = value
    if skipped:
        log.warning("%s: skipped %d row(s) whose name is not IMG_XX_<TYPE>_<L> (first: %r)",
                    path, len(skipped), skipped[0])  # fmt: skip
    return out


@register("vcl", about="VCL@FER, 552 distorted images, MOS 0-100")
def load_vcl(root: Path, **_options) -> tuple[list[Item], Path]:
    """Items of VCL@FER under ``root``."""
    score_file = _score_file(root)
    scores = _scores(score_file)
    if not scores:
        raise DatasetFormatError(f"{score_file} lists no IMG_XX_<TYPE>_<L> image")
    images = {}
    for p in sorted(root.rglob("*")):
        m = PATTERN.fullmatch(p.stem.upper())
        if m and p.suffix.lower() in (".bmp", ".jpg", ".jpeg", ".png"):
            images[p.stem.upper()] = p
    items = []
    for key, mos in sorted(scores.items()):
        m = PATTERN.fullmatch(key)
        path = images.get(key)
        if path is None:
            raise FileNotFoundError(f"image {key} listed in {score_file} is missing under {root}")
        scene, kind, level = f"IMG_{m.group(1)}", m.group(2).upper(), int(m.group(3))
        items.append(Item(str(path), mos / 100.0, mos, scene, kind, level))
    return items, score_file
