"""Finding a dataset's files under the folder a user points at."""

from __future__ import annotations

from pathlib import Path

from cprl_fast.data.csvs import read_header


def candidate_roots(root: Path, *nested: str) -> list[Path]:
    """``root`` and the folders below it named ``nested`` (once or twice: many archives unpack
    as ``X/X/``)."""
    out = [root]
    for name in nested:
        out += [root / name, root / name / name]
    return [p for p in out if p.is_dir()]


def find_csv_with(root: Path, columns: set[str], depth: int = 1) -> Path | None:
    """The first CSV (sorted by path) at most ``depth`` folders below ``root`` whose header
    holds every name in ``columns`` (case-insensitive)."""
    want = {c.lower() for c in columns}
    files = sorted(root.glob("*.csv"))
    if depth >= 1:
        files += sorted(root.glob("*/*.csv"))
    for path in files:
        if not path.is_file():  # a folder, FIFO or device named *.csv is no score table
            continue
        try:
            header = read_header(path)
        except (OSError, UnicodeDecodeError):
            continue
        if want <= {h.lower() for h in header}:
            return path
    return None


def find_file(root: Path, name: str, depth: int = 2) -> Path | None:
    """``root/name`` or the first ``root/*/.../name`` at most ``depth`` folders down."""
    for d in range(depth + 1):
        hits = sorted(root.glob("/".join(["*"] * d + [name])))
        for h in hits:
            if h.is_file():
                return h
    return None
