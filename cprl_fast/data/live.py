"""LIVE IQA release 2 (Sheikh et al. 2006): the official layout and pyiqa's meta CSV.

Official: ``refimgs/``, ``jp2k/ jpeg/ wn/ gblur/ fastfading/`` with ``img1.bmp ...``,
``dmos_realigned.mat`` (``dmos_new``, ``orgs``; preferred) or ``dmos.mat`` (``dmos``, ``orgs``),
``refnames_all.mat`` (``refnames_all``: the scene of each of the 982 entries). Entries with
``orgs == 1`` are copies of the references and are dropped: 779 distorted images remain.
Scores are DMOS (lower is better): ``q = 1 - (d - d_min) / (d_max - d_min)`` over the kept
images (docs/maths.md §7).
pyiqa: a CSV with ``ref_name,dist_name,mos`` (non-realigned DMOS; paths relative to the root).
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

from cprl_fast.data.base import DatasetFormatError, Item, register, require_file
from cprl_fast.data.csvs import column, listed_file, number, read_csv
from cprl_fast.data.layout import find_csv_with
from cprl_fast.io import open_regular_file

FOLDERS = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))
ENTRIES = sum(n for _, n in FOLDERS)  # 982


#: The most bytes a score file in MATLAB format may hold, or expand to once decompressed (the
#: LIVE and LIVE Challenge files are under 100 kB; scipy's ``loadmat`` inflates a compressed
#: variable whole, so 155 kB of zlib can make a 160 MB array).
MAX_MAT_BYTES = 16 << 20

_MI_COMPRESSED = 15  # MAT 5 data type of a zlib-compressed variable


def check_mat_size(path: Path, max_bytes: int = MAX_MAT_BYTES) -> None:
    """Raises :class:`DatasetFormatError` where the MATLAB file ``path`` (a regular file) holds
    more than ``max_bytes``, or its variables would once decompressed; streams the file's
    top-level elements, inflating at most ``max_bytes + 1`` bytes. Only MAT 5 files compress;
    anything else is left to ``loadmat``, whose reads the file's size bounds."""
    with open_regular_file(path, "MATLAB file") as fh:
        if os.fstat(fh.fileno()).st_size > max_bytes:
            raise DatasetFormatError(f"{path} holds more than {max_bytes} bytes: not a score "
                                     "file")  # fmt: skip
        head = fh.read(128)
        if len(head) < 128 or not head.startswith(b"MATLAB 5.0"):
            return
        order, total = ("<" if head[126:128] == b"IM" else ">"), 0
        while len(tag := fh.read(8)) == 8:
            kind, nbytes = struct.unpack(order + "II", tag)
            data = fh.read(nbytes) if kind >> 16 == 0 else b""  # else: a small element, in the tag
            if kind == _MI_COMPRESSED:
                try:
                    total += len(zlib.decompressobj().decompress(data, max_bytes - total + 1))
                except zlib.error:
                    return  # loadmat names the corrupt stream
            else:
                total += len(data) + len(fh.read(-nbytes % 8))
            if total > max_bytes:
                raise DatasetFormatError(f"{path} expands to more than {max_bytes} bytes once "
                                         "decompressed: not a score file")  # fmt: skip


def mat_vector(path: Path, key: str) -> np.ndarray:
    """Variable ``key`` of the MATLAB file ``path``, flattened (LIVE and LIVE Challenge); a file
    too large (:func:`check_mat_size`) or one ``loadmat`` cannot read is an error naming it."""
    from scipy.io import loadmat

    check_mat_size(path)
    try:
        data = loadmat(str(path))
    except Exception as err:  # scipy raises many kinds (zlib.error, MatReadError, ValueError)
        raise DatasetFormatError(f"{path} is not a MATLAB file this library can read "
                                 f"({type(err).__name__}: {err})") from None  # fmt: skip
    if key not in data:
        keys = sorted(k for k in data if not k.startswith("__"))
        raise DatasetFormatError(f"{path} has no variable {key!r}; it has {keys}")
    return np.asarray(data[key]).ravel()


def cell_strings(cells: np.ndarray) -> list[str]:
    """A MATLAB cell array of strings as Python strings."""
    return [str(np.asarray(c).ravel()[0]) for c in cells]


def _dmos_to_quality(dmos: np.ndarray) -> np.ndarray:
    lo, hi = float(dmos.min()), float(dmos.max())
    if hi <= lo:
        raise DatasetFormatError("all DMOS values are equal: cannot normalise")
    return 1.0 - (dmos - lo) / (hi - lo)


def _official(root: Path) -> tuple[list[Item], Path]:
    realigned = root / "dmos_realigned.mat"
    score_file = (
        realigned if realigned.is_file() else require_file(root / "dmos.mat", "LIVE DMOS file")
    )
    dmos = mat_vector(score_file, "dmos_new" if score_file == realigned else "dmos")
    orgs = mat_vector(score_file, "orgs")
    scenes = cell_strings(
        mat_vector(require_file(root / "refnames_all.mat", "LIVE scene file"), "refnames_all")
    )
    for what, arr in (("DMOS", dmos), ("orgs", orgs), ("refnames_all", scenes)):
        if len(arr) != ENTRIES:
            raise DatasetFormatError(f"LIVE {what} has {len(arr)} entries, expected {ENTRIES}")
    paths, kinds = [], []
    for folder, count in FOLDERS:
        for i in range(1, count + 1):
            paths.append(root / folder / f"img{i}.bmp")
            kinds.append(folder)
    keep = np.flatnonzero(orgs == 0)
    q = _dmos_to_quality(dmos[keep].astype(np.float64))
    items = [
        Item(str(paths[k]), float(qk), float(dmos[k]), Path(scenes[k]).stem, kinds[k])
        for k, qk in zip(keep, q, strict=True)
    ]
    return items, score_file


def _pyiqa(root: Path, meta: Path) -> tuple[list[Item], Path]:
    header, rows = read_csv(meta)
    ref = column(header, meta, "ref_name")
    dist = column(header, meta, "dist_name")
    mos = column(header, meta, "mos", "dmos")
    dmos = np.array([number(r, mos, meta, i + 2) for i, r in enumerate(rows)], dtype=np.float64)
    q = _dmos_to_quality(dmos)
    items = []
    for i, (r, d, qk) in enumerate(zip(rows, dmos, q, strict=True)):
        path = listed_file(root, r[dist], f"{meta}, row {i + 2}")
        rel = path.relative_to(root)
        items.append(
            Item(str(path), float(qk), float(d), Path(r[ref]).stem,
                 rel.parts[0] if len(rel.parts) > 1 else None)
        )  # fmt: skip
    return items, meta


@register("live", about="LIVE IQA release 2, 779 distorted images, DMOS")
def load_live(root: Path, **_options) -> tuple[list[Item], Path]:
    """Items of LIVE under ``root`` (official layout preferred, else pyiqa's CSV)."""
    if (root / "dmos_realigned.mat").is_file() or (root / "dmos.mat").is_file():
        return _official(root)
    meta = find_csv_with(root, {"ref_name", "dist_name", "mos"})
    if meta is not None:
        return _pyiqa(root, meta)
    raise FileNotFoundError(
        f"no LIVE score file under {root}: looked for dmos_realigned.mat, dmos.mat (official) and "
        "a CSV with columns ref_name,dist_name,mos (pyiqa)"
    )
