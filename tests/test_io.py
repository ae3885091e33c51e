"""Outputs that cannot hurt: CSV cells a spreadsheet would run as formulas are neutralised, control
characters in names are escaped in messages, JSON is standard JSON, a non-finite score is a
failure row (exit 1), an existing output is refused without --overwrite (checked before any
work), files take the user's umask, and temporaries of interrupted writes are removed by the
next write into the same place (a live writer's are kept)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from cprl_fast.io import csv_cell, printable, remove_stale_temporaries, temporary_path

#: every test here runs the command line in a fresh process (seconds each)
pytestmark = pytest.mark.slow


def _cli(*args, cwd=None, umask=None):
    set_umask = (lambda: os.umask(umask)) if umask is not None else None
    return subprocess.run([sys.executable, "-m", "cprl_fast_cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, preexec_fn=set_umask)


def _image(path, seed=0):
    a = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(a).save(path)
    return path


def _no_constants(text: str):
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_csv_cells_that_would_run_as_formulas_are_neutralised(tiny_run, tmp_path):
    names = ["=HYPERLINK(1).png", "+1.png", "-2.png", "@SUM.png", "plain.png"]
    for k, n in enumerate(names):
        _image(tmp_path / n, k)
    (tmp_path / "=broken.png").write_bytes(b"no image")
    r = _cli("score", "--model", tiny_run / "best.pt", "--", *names, "=broken.png", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [row["path"] for row in rows] == ["'" + n for n in names[:4]] + ["plain.png",
                                                                           "'=broken.png"]
    for row in rows:
        assert not row["path"].startswith(("=", "+", "-", "@"))
        assert not row["error"].startswith(("=", "+", "-", "@", "\t", "\r"))
    assert [csv_cell(c) for c in ("\tx", "\rx", "x=1")] == ["'\tx", "'\rx", "x=1"]


def test_control_characters_in_names_are_escaped_in_messages(tiny_run, tmp_path):
    name = "evil\x1b[2J\r\u202ename.png"
    (tmp_path / name).write_bytes(b"not an image")
    r = _cli("score", tmp_path, "--model", tiny_run / "best.pt")
    assert r.returncode == 1
    assert "\x1b" not in r.stderr and "\r" not in r.stderr and "\u202e" not in r.stderr
    assert "\\x1b[2J\\r\\u202ename.png" in r.stderr
    assert printable("a\nb\x00c") == "a\\nb\\x00c"


@pytest.fixture(scope="module")
def nan_run(tiny_run, tmp_path_factory):
    """The tiny run with its head's weights set to NaN: every score is NaN."""
    state = torch.load(tiny_run / "best.pt", weights_only=True)
    state["model"] = {k: (torch.full_like(v, float("nan")) if k.startswith("head") else v)
                      for k, v in state["model"].items()}  # fmt: skip
    out = tmp_path_factory.mktemp("nanrun") / "best.pt"
    torch.save(state, out)
    return out


def test_non_finite_scores_are_failures_and_json_is_standard(nan_run, tmp_path):
    _image(tmp_path / "a.png")
    out = tmp_path / "scores.json"
    r = _cli("score", tmp_path / "a.png", "--model", nan_run, "--out", out)
    assert r.returncode == 1 and "non-finite score" in r.stderr
    data = _no_constants(out.read_text())
    assert data["scores"] == [{"path": str(tmp_path / "a.png"), "score": None,
                               "error": "the model returned a non-finite score (nan)"}]  # fmt: skip
    r = _cli("score", tmp_path / "a.png", "--model", nan_run)
    assert r.returncode == 1 and r.stdout.splitlines()[1].split(",")[1] == ""


def test_an_existing_output_is_refused_before_any_work(tiny_run, tmp_path):
    _image(tmp_path / "a.png")
    out = tmp_path / "scores.csv"
    out.write_text("precious")
    # the output is checked first: a missing model is not even looked at
    r = _cli("score", tmp_path / "a.png", "--model", tmp_path / "missing.pt", "--out", out)
    assert r.returncode == 2 and "--out" in r.stderr and "--overwrite" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and out.read_text() == "precious"
    for bad, why in ((tmp_path, "is a folder"), (tmp_path / "s.txt", "must end in")):
        r = _cli("score", tmp_path / "a.png", "--model", tiny_run / "best.pt", "--out", bad)
        assert r.returncode == 2 and why in r.stderr, r.stderr
    r = _cli("score", tmp_path / "a.png", "--model", tiny_run / "best.pt", "--out", out,
             "--overwrite")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert out.read_text().startswith("path,score,error")
    weights = tmp_path / "m.safetensors"
    weights.write_text("precious")
    r = _cli("export", tiny_run / "best.pt", "--out", weights)
    assert r.returncode == 2 and "--overwrite" in r.stderr and weights.read_text() == "precious"
    r = _cli("export", tiny_run / "best.pt", "--out", weights, "--overwrite")
    assert r.returncode == 0, r.stderr


def test_outputs_take_the_users_umask(tiny_run, tmp_path):
    _image(tmp_path / "a.png")
    r = _cli("score", tmp_path / "a.png", "--model", tiny_run / "best.pt", "--out",
             tmp_path / "s.csv", umask=0o027)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE((tmp_path / "s.csv").stat().st_mode) == 0o640
    r = _cli("export", tiny_run / "best.pt", "--out", tmp_path / "m.safetensors", umask=0o002)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE((tmp_path / "m.safetensors").stat().st_mode) == 0o664


def test_interrupted_writes_leave_nothing_behind(tiny_run, tmp_path):
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout)  # fmt: skip
    target = tmp_path / "m.safetensors"
    stale = temporary_path(target).with_name(f".m.safetensors.{dead}.0badc0de.tmp")
    stale.write_text("interrupted")
    live = temporary_path(target)  # this process's: a concurrent writer, kept
    live.write_text("in progress")
    library = tmp_path / ".tmpAb12Cd"  # safetensors' own temporary, cut short
    library.write_bytes((40).to_bytes(8, "little") + b'{"w": {"dtype": "F32"')
    other = tmp_path / ".tmpZz99Yy"  # someone else's: not a safetensors header, kept
    other.write_text("not ours")
    r = _cli("export", tiny_run / "best.pt", "--out", target)
    assert r.returncode == 0, r.stderr
    assert not stale.exists() and not library.exists() and live.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, live.name,
                                                                other.name])  # fmt: skip
    live.unlink()
    other.unlink()
    assert remove_stale_temporaries(tmp_path) == []


def test_a_failed_pt2_export_leaves_the_old_set_whole(tiny_run, tmp_path, monkeypatch):
    import cprl_fast.export as export

    out = tmp_path / "m.pt2"
    paths = export.pt2_paths(out)
    for p in paths.values():
        p.write_text("old")

    def fail(program, path):
        raise RuntimeError("compiler died")

    monkeypatch.setattr(export, "_compile_package", fail)
    with pytest.raises(RuntimeError, match="compiler died"):
        export.export_pt2(tiny_run / "best.pt", out)
    assert all(p.read_text() == "old" for p in paths.values())  # the program was not replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths.values())


def test_files_kept_in_a_users_folder_are_never_reached_through_a_link(tmp_path):
    import fcntl

    from cprl_fast.figures import new_figure, save_figure
    from cprl_fast.io import NotARegularFile, file_lock, open_own_file

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    (tmp_path / ".builtin-v2.lock").symlink_to(victim)
    with pytest.raises(NotARegularFile, match=r"lock file .* is a symbolic link"):
        with file_lock(tmp_path / ".builtin-v2.lock"):
            pass
    (tmp_path / "dangling.lock").symlink_to(tmp_path / "made-by-the-link")
    with pytest.raises(NotARegularFile, match="is a symbolic link"):
        open_own_file(tmp_path / "dangling.lock", "lock file")
    assert not (tmp_path / "made-by-the-link").exists()  # O_CREAT did not follow it
    os.mkfifo(tmp_path / "fifo.lock")
    # an ordinary open for writing of a FIFO with no reader would block: refused at once
    with pytest.raises(NotARegularFile, match="not a regular file"):
        open_own_file(tmp_path / "fifo.lock", "lock file", os.O_WRONLY | os.O_APPEND)
    with file_lock(tmp_path / "ok.lock"):  # an ordinary lock still locks
        fd = os.open(tmp_path / "ok.lock", os.O_RDONLY)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
    (tmp_path / "fig.png").symlink_to(victim)  # a figure replaces a link, never writes into it
    fig = new_figure()
    fig.subplots()
    save_figure(fig, tmp_path / "fig.png")
    assert not (tmp_path / "fig.png").is_symlink() and victim.read_text() == "keep me\n"
    assert (tmp_path / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_writing_a_figure_leaves_the_callers_matplotlib_as_it_was(tmp_path):
    # figures were drawn through pyplot after matplotlib.use("Agg"), which switched the
    # process's backend (a notebook's inline one: its plots stopped showing)
    import matplotlib
    import matplotlib.pyplot as plt

    from cprl_fast.render import Curve, plot_against_eps

    before = matplotlib.get_backend()
    matplotlib.use("svg")  # stands in for a user's own backend
    try:
        mine = plt.figure()
        plot_against_eps([Curve("a", [0, 1, 2], [0.6, 0.5, 0.3], band=[[0.5, 0.7]] * 3)],
                         tmp_path / "c.png", "title", "eps", "SRCC", clean=0.6)  # fmt: skip
        assert matplotlib.get_backend() == "svg" and plt.get_fignums() == [mine.number]
        plt.close(mine)
    finally:
        matplotlib.use(before)
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_names_in_markdown_tables_cannot_break_a_row(tmp_path):
    from cprl_fast.evaluate import COLUMNS
    from cprl_fast.metrics import scores_with_intervals
    from cprl_fast.render import write_results

    rng = np.random.default_rng(0)
    y = rng.random(12)

    def condition(pred):
        return {**scores_with_intervals(pred, y), "score_change": 0.0, "robustness": None,
                "scores": pred.tolist(), "labels": y.tolist()}  # fmt: skip

    name = "run|a\nb"  # a run folder's name, or --checkpoint 'NAME=PATH'
    results = {"plain": {"clean": condition(y + rng.random(12))},
               name: {"clean": condition(y + rng.random(12))}}  # fmt: skip
    text = write_results(results, tmp_path)["md"].read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    cells = {len(re.split(r"(?<!\\)\|", row)) for row in rows[:4]}
    assert cells == {len(COLUMNS) + 4}, rows  # model, condition, the columns, two edges
    assert "| run\\|a\\nb | clean |" in text and "SRCC(run\\|a\\nb) - SRCC(plain)" in text
