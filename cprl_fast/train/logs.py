"""A run folder's logs and the figure drawn from them: ``log.csv`` (each iteration's losses,
written by the trainer and by the ranking pretraining), ``validation.csv`` (the validation
split's metrics after each epoch, :func:`append_validation`) and ``curves.png``
(:func:`draw_curves`; drawn when a run ends or the trainer stops at a non-finite loss). A
resumed run drops the rows written after the checkpoint it resumes from (:func:`truncate_log`).

The logs are the run's own files: opened as regular files, never through a link
(:func:`~cprl_fast.io.open_own_file`), read within :data:`MAX_LOG_BYTES`; a row that is not
numbers (a log cut by a crash) is left out of the figure.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np

from cprl_fast.io import open_own_file, read_regular_file, write_text_atomic
from cprl_fast.metrics import SCORES

#: The training loops read their losses to the host (for log.csv, the progress bar and the
#: non-finite check) once every this many steps and at each epoch's end, not after every step:
#: a read is a host synchronisation on a GPU.
LOG_EVERY = 25

#: The largest log a run folder's reader takes: a row per iteration of about 40 bytes, so a
#: run of millions of iterations.
MAX_LOG_BYTES = 256 << 20

#: The columns of ``validation.csv``: the iteration and epoch after which the validation split
#: was scored, and its metrics (:func:`cprl_fast.metrics.evaluate_scores`).
VALIDATION_COLUMNS = ("step", "epoch", *SCORES)

#: The validation metrics the figure shows (correlations, on one axis from -1 to 1).
SHOWN = ("srcc", "plcc")

#: The figure's caption: the losses' panel, and the validation panel's where the run has one.
CAPTION = ("Training curves: each loss in log.csv per iteration (thin: every value logged; "
           "thick: their running mean over a twentieth of them)")
VALIDATION_CAPTION = (" and, right, the validation split's SRCC and PLCC after each epoch "
                      "(validation.csv; the ringed point is the checkpoint best.pt holds, the "
                      "highest SRCC)")  # fmt: skip


def _lines(path: Path, what: str) -> list[str]:
    """The lines of a run's log, their ends kept (none for a missing file): read as its own
    file, never through a link, within :data:`MAX_LOG_BYTES`."""
    try:
        data = read_regular_file(path, what, MAX_LOG_BYTES, follow_links=False)
    except FileNotFoundError:
        return []
    return data.decode("utf-8", errors="replace").splitlines(keepends=True)


def truncate_log(path: Path, step: int, what: str = "training log") -> None:
    """Drops the rows of a run's log (``log.csv``, ``validation.csv``: the iteration first)
    after iteration ``step`` (written after the checkpoint a run resumes from), atomically."""
    lines = _lines(path, what)
    kept = lines[:1] + [ln for ln in lines[1:] if ln.split(",", 1)[0].isdigit()
                        and int(ln.split(",", 1)[0]) <= step]  # fmt: skip
    if len(kept) != len(lines):
        write_text_atomic(path, "".join(kept))


def append_validation(run_dir: Path, step: int, epoch: int, result: dict[str, float]) -> None:
    """Appends the validation metrics ``result`` after iteration ``step`` (epoch ``epoch``) to
    ``run_dir/validation.csv`` (:data:`VALIDATION_COLUMNS`, the header first)."""
    fd = open_own_file(run_dir / "validation.csv", "validation log",
                       os.O_WRONLY | os.O_APPEND | os.O_CREAT)  # fmt: skip
    with os.fdopen(fd, "a", newline="") as fh:
        writer = csv.writer(fh)
        if fh.tell() == 0:
            writer.writerow(VALIDATION_COLUMNS)
        writer.writerow([step, epoch, *(f"{result[k]:.6g}" for k in SCORES)])


def read_table(path: Path, what: str) -> tuple[list[str], np.ndarray]:
    """The header and the numeric rows ``[rows, columns]`` (float64; an empty cell is NaN) of
    a CSV file the run wrote; rows that are not numbers, or of another width, are left out.
    A missing file is no rows."""
    lines = _lines(path, what)
    if not lines:
        return [], np.zeros((0, 0))
    header = lines[0].rstrip("\r\n").split(",")
    rows = []
    for line in lines[1:]:
        cells = line.rstrip("\r\n").split(",")
        if len(cells) != len(header):
            continue
        try:
            rows.append([float(c) if c else math.nan for c in cells])
        except ValueError:
            continue
    return header, np.array(rows, dtype=np.float64).reshape(len(rows), len(header))


def running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """The mean of each value and the ``window - 1`` before it (fewer at the start), NaNs left
    out of each mean (NaN where a window holds none)."""
    finite = np.isfinite(values)
    # cumulative sums with a zero in front: a window's total is the difference of two of them
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, values, 0.0))])
    counts = np.concatenate([[0], np.cumsum(finite)])
    end = np.arange(1, len(values) + 1)
    start = np.maximum(end - window, 0)
    n = counts[end] - counts[start]
    return np.where(n > 0, (sums[end] - sums[start]) / np.maximum(n, 1), np.nan)


def draw_curves(run_dir: str | Path) -> Path | None:
    """``run_dir/curves.png`` from the run's ``log.csv`` (the iteration, ``step``, first; an
    ``epoch`` column is not drawn) and ``validation.csv`` where the run has one; None (nothing
    written) when the log holds no iteration yet. The losses share a log scale when every one
    is positive."""
    from cprl_fast.figures import caption_title, new_figure, save_figure

    run_dir = Path(run_dir)
    header, log = read_table(run_dir / "log.csv", "training log")
    if len(log) == 0 or header[:1] != ["step"]:
        return None
    vheader, val = read_table(run_dir / "validation.csv", "validation log")
    panels = 2 if len(val) and vheader[: len(VALIDATION_COLUMNS)] == list(VALIDATION_COLUMNS) \
        else 1  # fmt: skip
    fig = new_figure(figsize=(6 * panels, 3.8))
    axes = fig.subplots(1, panels, squeeze=False)
    ax = axes[0][0]
    positive = True
    for k, name in enumerate(header):
        if name in ("step", "epoch"):
            continue
        # a loss the game logs on some iterations only (SF on even, NC on odd): its own points
        finite = np.isfinite(log[:, k])
        if not finite.any():
            continue
        steps, values = log[finite, 0], log[finite, k]
        positive &= bool(values.min() > 0)
        (line,) = ax.plot(steps, values, lw=0.5, alpha=0.35)
        ax.plot(steps, running_mean(values, max(1, len(values) // 20)), lw=1.8,
                color=line.get_color(), label=name)  # fmt: skip
    if positive:
        ax.set_yscale("log")
    ax.set(xlabel="iteration", ylabel="loss", title="training losses")
    ax.legend(fontsize=7)
    if panels == 2:
        ax = axes[0][1]
        for name in SHOWN:
            ax.plot(val[:, 0], val[:, vheader.index(name)], marker="o", ms=3, label=name)
        srcc = val[:, vheader.index("srcc")]
        if np.isfinite(srcc).any():
            best = int(np.nanargmax(srcc))  # the first highest, as the trainer keeps it
            ax.plot(val[best, 0], srcc[best], "o", ms=11, mfc="none", color="black",
                    label="best.pt")  # fmt: skip
        ax.set(xlabel="iteration", ylabel="correlation with the labels", ylim=(-1.05, 1.05),
               title="validation, after each epoch")  # fmt: skip
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    caption_title(fig, CAPTION + (VALIDATION_CAPTION if panels == 2 else "") + ".")
    path = run_dir / "curves.png"
    save_figure(fig, path)
    return path
