"""One lock holder: the run-folder lock is a kernel flock taken with its owner written while held,
so no two processes ever hold it (4 processes race for it many times), and a lock file naming a
live process that does not hold the lock (a recycled pid) is taken over."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path

from cprl_fast.train.trainer import run_folder


def _contend(folder: str, rounds: int, holders: str, overlaps) -> None:
    out, inside = Path(folder), Path(holders)
    for _ in range(rounds):
        try:
            with run_folder(out):
                mine = inside / str(os.getpid())
                mine.touch()
                if len(list(inside.iterdir())) != 1:
                    with overlaps.get_lock():
                        overlaps.value += 1
                time.sleep(0.0005)
                mine.unlink()
        except RuntimeError as err:
            assert "in use by another trainer" in str(err)


def test_four_processes_never_hold_the_lock_together(tmp_path):
    holders = tmp_path / "holders"
    holders.mkdir()
    ctx = mp.get_context("fork")
    overlaps = ctx.Value("i", 0)
    procs = [ctx.Process(target=_contend, args=(str(tmp_path / "run"), 150, str(holders),
                                                overlaps)) for _ in range(4)]  # fmt: skip
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    assert overlaps.value == 0


def test_a_lock_file_naming_a_live_process_that_does_not_hold_it_is_taken_over(tmp_path):
    (tmp_path / ".lock").write_text(f"{os.getppid()} 12345")  # a live pid: recycled, say
    with run_folder(tmp_path):
        pid, start = (tmp_path / ".lock").read_text().split()
        assert int(pid) == os.getpid() and start.isdigit()
    assert not (tmp_path / ".lock").exists()


def test_a_link_or_fifo_planted_in_a_run_folder_is_never_written_through(tmp_path):
    # /tmp/run/.lock -> ~/.bashrc: the lock's open + truncate + pid write would have emptied
    # the target; log.csv -> a file: resuming would have appended rows to it
    import pytest

    from cprl_fast.io import NotARegularFile
    from cprl_fast.train.logs import truncate_log

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").symlink_to(victim)
    with pytest.raises(NotARegularFile, match=r"run folder's lock file .*\.lock is a symbolic "
                                              r"link: this file is never followed"):
        with run_folder(run):
            pass
    (run / ".lock").unlink()
    os.mkfifo(run / ".lock")  # opened without O_NONBLOCK it would wait for a writer
    with pytest.raises(NotARegularFile, match="is not a regular file"):
        with run_folder(run):
            pass
    (run / ".lock").unlink()
    (run / "log.csv").symlink_to(victim)
    with pytest.raises(NotARegularFile, match=r"training log .*log\.csv is a symbolic link"):
        truncate_log(run / "log.csv", 0)
    assert victim.read_text() == "keep me\n"
    (run / "log.csv").unlink()
    (run / "log.csv").write_text("step,epoch,l_reg\n0,0,0.5\n1,0,0.4\n2,0,0.3\n")
    truncate_log(run / "log.csv", 1)
    assert (run / "log.csv").read_text() == "step,epoch,l_reg\n0,0,0.5\n1,0,0.4\n"
