"""KonIQ-10k (Hosu et al.): 10073 in-the-wild images.

Images in ``1024x768/`` or ``512x384/`` (``resolution`` picks one; by default the first that
exists, in that order), at the root or one folder below. Scores, the first found:
``koniq10k_scores_and_distributions.csv`` (``MOS`` 1-5), the official split file
``koniq10k_distributions_sets.csv`` (its ``MOS`` column is the 0-100 z-score, so the 1-5 MOS is
rebuilt from the vote fractions ``c1..c5``), or pyiqa's CSV ``img_name,mos,std,split,c1..c5``
(``mos`` is the z-score too; MOS again from ``c1..c5``). ``q = (MOS - 1) / 4``. Every image is
its own scene. The official split (``set`` training/validation/test, or pyiqa's 0/1/2) is kept
per item for ``official_split=True``.
"""

from __future__ import annotations

from pathlib import Path

from cprl_fast.data.base import DatasetFormatError, Item, register
from cprl_fast.data.csvs import column, listed_file, number, read_csv
from cprl_fast.data.layout import find_csv_with, find_file

SCORES = "koniq10k_scores_and_distributions.csv"
SETS = "koniq10k_distributions_sets.csv"
RESOLUTIONS = ("1024x768", "512x384")
PYIQA_SPLITS = {"0": "training", "1": "validation", "2": "test"}


def _image_dir(root: Path, resolution: str | None) -> Path:
    wanted = RESOLUTIONS if resolution is None else (resolution,)
    if resolution is not None and resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {resolution!r}")
    for res in wanted:
        for cand in [root / res, *sorted(root.glob(f"*/{res}"))]:
            if cand.is_dir():
                return cand
    raise FileNotFoundError(f"no KonIQ-10k image folder {' or '.join(wanted)} under {root}")


def _mos_from_votes(row: dict[str, str], cols: list[str], path: Path, line: int) -> float:
    votes = [number(row, c, path, line) for c in cols]
    total = sum(votes)
    if total <= 0:
        raise DatasetFormatError(f"{path}, row {line}: the votes c1..c5 sum to {total}")
    return sum((i + 1) * v for i, v in enumerate(votes)) / total


def official_sets(root: Path) -> dict[str, str]:
    """image name -> training/validation/test, from the official split file or pyiqa's CSV."""
    sets_file = find_file(root, SETS)
    if sets_file is not None:
        header, rows = read_csv(sets_file)
        name, split = column(header, sets_file, "image_name"), column(header, sets_file, "set")
        return {r[name]: r[split] for r in rows}
    meta = find_csv_with(root, {"img_name", "split"})
    if meta is not None:
        header, rows = read_csv(meta)
        name, split = column(header, meta, "img_name"), column(header, meta, "split")
        return {Path(r[name]).name: PYIQA_SPLITS.get(r[split], r[split]) for r in rows}
    raise FileNotFoundError(
        f"KonIQ-10k's official split needs {SETS} or pyiqa's CSV (with a split column) under {root}"
    )


@register("koniq", official_split=official_sets, about="KonIQ-10k, 10073 images, MOS 1-5")
def load_koniq(root: Path, resolution: str | None = None, **_options) -> tuple[list[Item], Path]:
    """Items of KonIQ-10k under ``root``."""
    scores_file = find_file(root, SCORES)
    sets_file = find_file(root, SETS)
    rows_out: list[tuple[str, float]] = []  # image name, MOS 1-5
    if scores_file is not None:
        header, rows = read_csv(scores_file)
        name, mos = column(header, scores_file, "image_name"), column(header, scores_file, "MOS")
        rows_out = [(r[name], number(r, mos, scores_file, i + 2)) for i, r in enumerate(rows)]
        score_file = scores_file
    elif sets_file is not None:
        header, rows = read_csv(sets_file)
        name = column(header, sets_file, "image_name")
        votes = [column(header, sets_file, f"c{i}") for i in range(1, 6)]
        rows_out = [
            (r[name], _mos_from_votes(r, votes, sets_file, i + 2)) for i, r in enumerate(rows)
        ]
        score_file = sets_file
    else:
        meta = find_csv_with(root, {"img_name", "mos", "c1", "c5"})
        if meta is None:
            raise FileNotFoundError(
                f"no KonIQ-10k score file under {root}: looked for {SCORES}, {SETS} (official) "
                "and a CSV with columns img_name,mos,c1..c5 (pyiqa)"
            )
        header, rows = read_csv(meta)
        name = column(header, meta, "img_name")
        votes = [column(header, meta, f"c{i}") for i in range(1, 6)]
        rows_out = [
            (Path(r[name]).name, _mos_from_votes(r, votes, meta, i + 2)) for i, r in enumerate(rows)
        ]
        score_file = meta
    images = _image_dir(root, resolution)
    items = [Item(str(listed_file(images, n, f"{score_file}, row {i + 2}")), (m - 1.0) / 4.0, m,
                  Path(n).stem) for i, (n, m) in enumerate(rows_out)]  # fmt: skip
    return items, score_file
