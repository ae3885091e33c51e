"""How many CPU threads torch should use: without oversubscribing the cores this process may
actually run on.

torch's default is the machine's physical core count, which ignores the CPU affinity mask and a
container's CPU quota; on a shared or limited machine that oversubscribes the cores (one
training iteration on this project's 2-core VM ran 6x slower with the default than with one
thread while other work shared the machine). :func:`pick_threads` takes, in order: an explicit
request (``cprl-fast --threads N``), ``OMP_NUM_THREADS`` (left to torch, which honours it), or
the smaller of torch's default and :func:`available_cores`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

#: Where a cgroup CPU quota is read: v2's ``cpu.max`` ("QUOTA PERIOD" or "max PERIOD"), v1's
#: ``cpu.cfs_quota_us`` and ``cpu.cfs_period_us``.
CGROUP = Path("/sys/fs/cgroup")

#: The most threads ``--threads`` may ask for per available core. More only slow torch down
#: (each waits for a core), and far more crash it: 32768 threads on this project's 2-core VM
#: ended in a segmentation fault at torch's first parallel loop (2026-12-08; 8192 ran).
THREADS_PER_CORE = 8


def cgroup_cpu_quota(root: Path = CGROUP) -> float | None:
    """CPUs' worth of time the cgroup may use (e.g. 1.5), or None where no quota is set."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def available_cores(root: Path = CGROUP) -> int:
    """CPUs this process may run on: the affinity mask, capped by the cgroup quota (rounded
    up: a quota of 1.5 CPUs keeps two threads busy part of the time)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    quota = cgroup_cpu_quota(root)
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def pick_threads(requested: int | None = None, root: Path = CGROUP) -> tuple[int, str]:
    """``(threads, why)``: the thread count to use and the reason, for the note the CLI
    prints."""
    cores = available_cores(root)
    if requested is not None:
        if requested < 1:
            raise ValueError(f"--threads must be >= 1, got {requested}")
        if requested > THREADS_PER_CORE * cores:
            raise ValueError(f"--threads must be at most {THREADS_PER_CORE * cores} "
                             f"({THREADS_PER_CORE} per core; this process may use {cores}), "
                             f"got {requested}")  # fmt: skip
        return requested, f"--threads; {cores} core(s) available"
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env:
        return torch.get_num_threads(), f"OMP_NUM_THREADS={env}; {cores} core(s) available"
    default = torch.get_num_threads()
    if default <= cores:
        return default, f"torch's default; {cores} core(s) available"
    return cores, f"{cores} core(s) available to this process, torch's default was {default}"


def set_threads(requested: int | None = None, root: Path = CGROUP) -> str:
    """Applies :func:`pick_threads` to torch and returns the note (``threads: N (why)``)."""
    n, why = pick_threads(requested, root)
    if n != torch.get_num_threads():
        torch.set_num_threads(n)
    return f"threads: {n} ({why}; --threads N or OMP_NUM_THREADS to change)"
