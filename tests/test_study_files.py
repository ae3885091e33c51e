"""Study report-only is read-only: on a copy of the committed study folder it writes nothing but
the report (no model file needed, no data generated, no split or settings file touched), and a
corrupt study.json or audit report is an error naming the file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[1] / "results"
COMMITTED = RESULTS / "robustness-builtin-v2"
REPORT = {"report.md", "report.json", "worst_vs_eps.png"}

#: every test here runs the command line in a fresh process (seconds each)
pytestmark = pytest.mark.slow


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _report_only(folder: Path, cache: Path):
    return subprocess.run([sys.executable, "-m", "cprl_fast_cli", "study", "--report-only",
                           "--out-dir", str(folder)], capture_output=True, text=True,
                          env={**os.environ, "CPRL_FAST_CACHE": str(cache)})  # fmt: skip


def test_report_only_on_a_copy_of_the_committed_study_writes_only_the_report(tmp_path):
    folder = tmp_path / "study"
    shutil.copytree(COMMITTED, folder)
    before = _files(folder)
    cache = tmp_path / "cache"
    r = _report_only(folder, cache)
    assert r.returncode == 0, r.stderr
    after = _files(folder)
    assert set(after) == set(before)  # no new file: no model, split or data
    changed = {k for k in before if before[k] != after[k]}
    assert changed <= REPORT, changed
    assert not cache.exists()  # no dataset generated
    assert "Robustness study" in r.stdout


def test_corrupt_study_files_are_named(tmp_path):
    folder = tmp_path / "study"
    shutil.copytree(COMMITTED, folder)
    (folder / "study.json").write_text("{not json")
    r = _report_only(folder, tmp_path / "cache")
    assert r.returncode == 2 and "study.json" in r.stderr and "not valid JSON" in r.stderr
    shutil.copy(COMMITTED / "study.json", folder / "study.json")
    audit = next(folder.glob("runs/*/audit/*/report.json"))
    audit.write_text("[]")
    r = _report_only(folder, tmp_path / "cache")
    assert r.returncode == 2 and str(audit) in r.stderr, r.stderr


def test_report_only_says_in_how_many_runs_a_mean_is_defined(tmp_path):
    # fold 0's smoothed CPRL scores every image alike: its smoothed SRCC is undefined, and the
    # mean over the runs is over the other two, said so (it used to read "nan")
    folder = tmp_path / "study"
    shutil.copytree(RESULTS / "certified-builtin-v2-native", folder,
                    ignore=shutil.ignore_patterns("models"))  # fmt: skip
    r = _report_only(folder, tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    report = (folder / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| CPRL (CA + PNS) | 0.25"))
    assert "(2 of 3 runs; constant scores in the rest)" in row and "| nan |" not in report
    # the certified SRCC holds for a run's 20 intervals at once with 1 - 20 x 0.001 by the union
    # bound (the report used to print a fixed 0.95, which 250 images would have made 0.75)
    assert "probability 0.98 for all 20 intervals of a run at once" in report
