"""The thread count the CLI picks: the cgroup quota and affinity cap torch's default, an
explicit --threads or OMP_NUM_THREADS wins, and the long commands print the choice."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from cprl_fast.threads import available_cores, cgroup_cpu_quota, pick_threads, set_threads


@pytest.fixture(autouse=True)
def _restore_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _cgroup(tmp_path, v2: str | None = None, v1: tuple[int, int] | None = None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    if v2 is not None:
        (tmp_path / "cpu.max").write_text(v2 + "\n")
    if v1 is not None:
        (tmp_path / "cpu").mkdir()
        (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(f"{v1[0]}\n")
        (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(f"{v1[1]}\n")
    return tmp_path


def test_quota_is_read_from_cgroup_v2_and_v1(tmp_path):
    assert cgroup_cpu_quota(_cgroup(tmp_path / "a", v2="150000 100000")) == 1.5
    assert cgroup_cpu_quota(_cgroup(tmp_path / "b", v2="max 100000")) is None
    assert cgroup_cpu_quota(_cgroup(tmp_path / "c", v1=(50000, 100000))) == 0.5
    assert cgroup_cpu_quota(_cgroup(tmp_path / "d", v1=(-1, 100000))) is None
    assert cgroup_cpu_quota(tmp_path / "none") is None


def test_a_quota_caps_the_cores_and_the_threads(tmp_path):
    limited = _cgroup(tmp_path / "a", v2="50000 100000")
    assert available_cores(limited) == 1
    n, why = pick_threads(None, limited)
    assert n == 1 and "1 core(s) available" in why
    torch.set_num_threads(2)
    note = set_threads(None, limited)
    assert torch.get_num_threads() == 1 and note.startswith("threads: 1 (")
    assert "torch's default was 2" in note
    assert available_cores(_cgroup(tmp_path / "b", v2="max 100000")) >= 1


def test_an_explicit_request_or_omp_num_threads_wins(tmp_path, monkeypatch):
    limited = _cgroup(tmp_path, v2="50000 100000")
    assert pick_threads(3, limited) == (3, "--threads; 1 core(s) available")
    with pytest.raises(ValueError, match="--threads must be >= 1, got 0"):
        pick_threads(0, limited)
    assert pick_threads(8, limited)[0] == 8  # oversubscribed, as asked
    # far more threads than cores crash torch at its first parallel loop: refused
    with pytest.raises(ValueError, match=r"--threads must be at most 8 \(8 per core; this "
                       r"process may use 1\), got 9$"):  # fmt: skip
        pick_threads(9, limited)
    torch.set_num_threads(2)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    n, why = pick_threads(None, limited)
    assert n == 2 and why.startswith("OMP_NUM_THREADS=2")


@pytest.mark.slow
def test_the_cli_prints_its_choice_and_refuses_zero():
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "cprl_fast_cli", *args],
                              capture_output=True, text=True)  # fmt: skip

    r = cli("--threads", "1", "evaluate", "--checkpoint", "nope.pt")
    assert r.returncode == 2 and r.stdout.startswith("threads: 1 (--threads;")
    assert r.stderr.strip().startswith("cprl-fast evaluate: checkpoint not found: nope.pt")
    assert len(r.stderr.strip().splitlines()) == 1
    r = cli("--threads", "0", "evaluate", "--checkpoint", "nope.pt")
    assert r.returncode == 2
    assert r.stderr.strip() == "cprl-fast evaluate: --threads must be >= 1, got 0"
    r = cli("info", "nope.pt")
    assert "threads:" not in r.stdout  # machine-readable commands print no note
