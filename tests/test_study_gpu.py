"""The GPU study script's plumbing (bench/study_gpu.sh), run here with its CPU stand-in: both
studies run to their reports, the trained models are not left behind, a second session that
starts from the first one's files (as committed) finishes without training, and a session
without time left says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from data_fixtures import shared_builtin_root

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ("robustness-builtin-v2-standin", "certified-builtin-v2-standin")


def _run(out: Path, cache: Path, **env) -> subprocess.CompletedProcess:
    # the built-in data in the session's folder (test_data reads builtin-v2 there), never in
    # the user's cache
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "STUDY_THREADS": "1",
           "STUDY_SECONDS": "1500", "CPRL_FAST_CACHE": str(cache), **env}  # fmt: skip
    return subprocess.run(["bash", "bench/study_gpu.sh", "--device", "cpu"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)  # fmt: skip


def _audits(folder: Path) -> dict[str, dict]:
    return {str(p.relative_to(folder)): json.loads(p.read_text())
            for p in sorted(folder.glob("runs/*/audit/*/report.json"))}  # fmt: skip


@pytest.mark.slow
def test_study_script_runs_resumes_from_committed_files_and_stops_in_time(tmp_path,
                                                                          tmp_path_factory):
    cache = shared_builtin_root(tmp_path_factory)
    first = tmp_path / "first"
    r = _run(first, cache)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    for name in STUDIES:
        assert f"== {name}: 4 audits finished; the report holds 2 of 2 runs" in r.stdout
        assert not list((first / name).glob("runs/*/models"))  # not carried back
        assert (first / name / "report.md").is_file()
    certified = _audits(first / STUDIES[1])
    assert all(a["certified"][0]["n"] == 8 for a in certified.values())
    # the next session: the first one's files as committed, without models; nothing is
    # trained (a file where a run's models folder would go makes any training fail)
    for run in first.glob("*/runs/*"):
        (run / "models").write_text("no training here")
    second = tmp_path / "second"
    r = _run(second, cache, STUDY_RESULTS=str(first))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    for name in STUDIES:
        assert f"== {name}: 4 audits finished; the report holds 2 of 2 runs" in r.stdout
        assert not list((second / name).glob("runs/*/models"))
        assert _audits(second / name) == _audits(first / name)
    r = _run(tmp_path / "third", cache, STUDY_SECONDS="5")
    assert r.returncode == 124 and r.stdout.count("no time left (STUDY_SECONDS)") == 2
