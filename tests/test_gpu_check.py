"""The GPU check's plumbing, run here with its CPU stand-in: every step runs to the end and
leaves its file, the benchmark rows carry their check against eager, and a broken step does
not stop the others."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_to_the_end_on_the_cpu(tmp_path):
    # no deadline: a busy machine makes the steps slower, never cuts them
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable,
           "GPU_CHECK_SECONDS": "none"}  # fmt: skip
    r = subprocess.run(["bash", "bench/gpu_check.sh", "--device", "cpu"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "CUT by its time limit" not in r.stdout
    for step in ("machine", "tests and compute-sanitizer", "benchmark", "end to end", "done"):
        assert f"== {step}" in r.stdout, step
    bench = json.loads((tmp_path / "bench.json").read_text())
    dtypes = {row["dtype"] for row in bench["rows"]}
    assert dtypes == {"float32", "bfloat16"}
    checked = [row for row in bench["rows"] if row["provider"] != "eager"]
    assert checked and all(row["check"].startswith("ok") for row in checked), checked
    assert {row["op"] for row in bench["rows"]} == {"rank_mask", "intervene", "attack_step"}
    assert "| rank_mask |" in (tmp_path / "bench.md").read_text()
    tests_log = (tmp_path / "tests.log").read_text()
    assert " passed" in tests_log and " failed" not in tests_log, tests_log[-2000:]
    assert "sanitize:" in (tmp_path / "sanitizer.log").read_text()
    e2e = json.loads((tmp_path / "e2e.json").read_text())
    assert e2e["cprl_fwd_bwd_s"] > 0 and e2e["train_iteration"]["fast_ratio"] > 0
