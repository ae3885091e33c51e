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

from cprl_fast.ops import SPECS

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
    for step in ("machine", "end to end", "op rows at the targets' shapes",
                 "the audit's suite against its floor", "tests and compute-sanitizer",
                 "op rows at the targets' shapes, channels_last",
                 "kernels under Nsight Compute", "the other op rows", "done"):  # fmt: skip
        assert f"== {step}" in r.stdout, step
    # issue 25's order: what is owed first (end to end, then the targets' op rows)
    assert r.stdout.index("== end to end") < r.stdout.index("== op rows") \
        < r.stdout.index("== the audit's") < r.stdout.index("== tests and compute-sanitizer")
    rows = {}
    for name in ("bench.json", "bench-cl.json", "bench-rest.json", "bench-attack.json"):
        rows[name] = json.loads((tmp_path / name).read_text())["rows"]
    assert "stopped early" not in r.stdout, r.stdout[-3000:]
    # what the built-in data needs, said before anything uses it
    machine = (tmp_path / "gpu.txt").read_text()
    assert all(f"{m} found" in machine for m in ("piq", "skimage", "matplotlib")), machine
    assert "CUDA-event device time" in (tmp_path / "timing.md").read_text()
    # the kernel profile's driver ran every case of its plan (no ncu on the CPU)
    profiled = json.loads((tmp_path / "kernels-manifest.json").read_text())["cases"]
    assert {c["op"] for c in profiled} == {"copy", "rank_mask", "intervene"}
    assert {c["layout"] for c in profiled} == {"contiguous", "channels_last"}
    every = [row for r in rows.values() for row in r]
    checked = [row for row in every if row["provider"] != "eager"]
    assert checked and all(row["check"].startswith("ok") for row in checked), checked

    def expected(ops, passes):  # every shape, dtype and provider of those ops and passes
        return {(op, tuple(shape), p, dtype, provider)
                for op in ops for shape in SPECS[op].small_bench_shapes for p in passes
                for dtype in ("float32", "bfloat16") for provider in ("eager", "compile", "native")}

    def found(name, layout="contiguous"):
        assert {row["layout"] for row in rows[name]} == {layout}, name
        return {(row["op"], tuple(row["shape"]), row["pass"], row["dtype"], row["provider"])
                for row in rows[name]}  # fmt: skip

    assert found("bench.json") == expected(("rank_mask", "intervene"), ("fwdbwd",))
    assert found("bench-cl.json", "channels_last") == expected(("rank_mask", "intervene"),
                                                               ("fwdbwd",))  # fmt: skip
    assert found("bench-rest.json") == expected(("rank_mask", "intervene"), ("fwd", "bwd"))
    assert found("bench-attack.json") == expected(("attack_step",), ("fwd",))
    # on the CPU a row is read on the wall clock, with the host time in its own column
    assert all(row["timing"] == "wall" and row["host_seconds"] > 0 for row in every)
    assert "| rank_mask |" in (tmp_path / "bench.md").read_text()
    tests_log = (tmp_path / "tests.log").read_text()
    assert " passed" in tests_log and " failed" not in tests_log, tests_log[-2000:]
    assert "sanitize:" in (tmp_path / "sanitizer.log").read_text()
    e2e = json.loads((tmp_path / "e2e.json").read_text())
    assert e2e["cprl_fwd_bwd_s"] > 0 and e2e["train_iteration"]["fast_ratio"] > 0
    # every end-to-end case in channels_last, as on the GPU
    assert e2e["channels_last"] and e2e["train_iteration"]["channels_last"]
    assert e2e["cprl_fwd_bwd"]["host_s"] > 0 and e2e["pgd10_fused"]["wall_s"] > 0
    # the audit timed against its floor, in the form bench.gpu_targets reads
    audit = json.loads((tmp_path / "audit.json").read_text())
    assert audit["model"] == "cprl_resnet18" and audit["images"] == 4
    assert "pgd-soft" in audit["attacks"]
    assert audit["seconds"] == pytest.approx(audit["measured_s"] * 250 / 4)
    assert audit["over_floor"] == pytest.approx(audit["seconds"] / (sum(audit["floor_s"]) / 2))
    assert "`audit.json`" in (tmp_path / "timing.md").read_text()


def _gpu_check(tmp_path, only: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable,
           "GPU_CHECK_SECONDS": "none", "GPU_CHECK_ONLY": only}  # fmt: skip
    return subprocess.run(["bash", "bench/gpu_check.sh", "--device", "cpu"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


@pytest.mark.slow
def test_a_second_call_runs_only_the_steps_it_names(tmp_path):
    r = _gpu_check(tmp_path, "kernels")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "== machine" in r.stdout and "== kernels under Nsight Compute" in r.stdout
    for step in ("end to end", "op rows", "tests and compute-sanitizer", "the other op rows"):
        assert f"== {step}" not in r.stdout, step
    assert (tmp_path / "kernels-manifest.json").is_file()
    assert not (tmp_path / "bench.json").exists() and not (tmp_path / "e2e.json").exists()


def test_a_step_it_does_not_know_is_refused_before_anything_runs(tmp_path):
    r = _gpu_check(tmp_path, "tests,kernel")
    assert r.returncode == 2
    assert r.stderr.strip() == ("gpu_check: GPU_CHECK_ONLY: 'kernel' is not one of e2e, ops, "
                                "model, audit, tests, ops-cl, kernels, rest")  # fmt: skip
    assert not (tmp_path / "timing.md").exists()
