"""LIVE In the Wild Challenge (Ghadiyaram & Bovik): 1162 authentically distorted images.

Official: ``ChallengeDB_release/`` (often nested twice) with ``Images/`` and
``Data/AllImages_release.mat`` (``AllImages_release``: 1169 names) and
``Data/AllMOS_release.mat`` (``AllMOS_release``). pyiqa: a CSV ``img_name,mos,std`` (1169 rows).
The 7 training images ``t1..t7`` are dropped by every loader. ``q = MOS / 100``; every image is
its own scene.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from cprl_fast.data.base import DatasetFormatError, Item, register, require_file
from cprl_fast.data.csvs import column, listed_file, number, read_csv
from cprl_fast.data.layout import candidate_roots, find_csv_with
from cprl_fast.data.live import cell_strings, mat_vector

TRAINING = re.compile(r"t[1-7]", re.IGNORECASE)


def _is_training(name: str) -> bool:
    return TRAINING.fullmatch(Path(name).stem) is not None


def _item(base: Path, name: str, mos: float, where: str) -> Item:
    path = listed_file(base / "Images", name, where)
    if not path.exists() and (base / name).exists():
        path = base / name
    return Item(str(path), mos / 100.0, mos, Path(name).stem)


@register("livec", about="LIVE In the Wild Challenge, 1162 images, MOS 0-100")
def load_livec(root: Path, **_options) -> tuple[list[Item], Path]:
    """Items of LIVE Challenge under ``root`` (official layout preferred, else pyiqa's CSV)."""
    for base in candidate_roots(root, "ChallengeDB_release"):
        if (base / "Data" / "AllMOS_release.mat").is_file():
            score_file = base / "Data" / "AllMOS_release.mat"
            names_file = base / "Data" / "AllImages_release.mat"
            names = cell_strings(
                mat_vector(require_file(names_file, "LIVE Challenge names"), "AllImages_release")
            )
            mos = mat_vector(score_file, "AllMOS_release").astype(np.float64)
            if len(names) != len(mos):
                raise DatasetFormatError(
                    f"{len(names)} image names but {len(mos)} MOS values in {base / 'Data'}"
                )
            pairs = enumerate(zip(names, mos, strict=True))
            items = [_item(base, n, float(m), f"{names_file}, entry {k + 1}")
                     for k, (n, m) in pairs if not _is_training(n)]  # fmt: skip
            return items, score_file
    for base in candidate_roots(root, "ChallengeDB_release"):
        meta = find_csv_with(base, {"img_name", "mos"})
        if meta is not None:
            header, rows = read_csv(meta)
            name, mos = column(header, meta, "img_name"), column(header, meta, "mos")
            items = [
                _item(base, r[name], number(r, mos, meta, i + 2), f"{meta}, row {i + 2}")
                for i, r in enumerate(rows)
                if not _is_training(r[name])
            ]
            return items, meta
    raise FileNotFoundError(
        f"no LIVE Challenge score file under {root}: looked for Data/AllMOS_release.mat in it, "
        "ChallengeDB_release/ and ChallengeDB_release/ChallengeDB_release/ (official), and a CSV "
        "with columns img_name,mos (pyiqa)"
    )
