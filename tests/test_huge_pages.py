"""The CPU kernels advise their large fresh outputs for transparent huge pages
(csrc/cpu/huge_pages.h): the outputs of rank_mask and intervene, forward and backward, are backed
by huge pages where THP is in "madvise" mode, while torch's own allocation of the same size is
not (the hint is per buffer, not a process setting), and CPRL_FAST_HUGE_PAGES=0 turns it off."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cprl_fast import ops

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")
pytestmark = pytest.mark.skipif(
    not THP.exists() or "[madvise]" not in THP.read_text(),
    reason="transparent huge pages are not in madvise mode here",
)
# 48 MiB of float32: above the hint's 8 MiB, and above the 32 MiB up to which glibc hands freed
# memory back out (already touched: no fault to take a huge page) once earlier tests freed some
SHAPE = (3, 64, 256, 256)


def huge_kib(t: torch.Tensor) -> int:
    """AnonHugePages (kB) of the mappings that overlap ``t``'s memory (/proc/self/smaps)."""
    lo, hi = t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and ":" not in head:
            start, end = (int(v, 16) for v in head.split("-"))
            inside = start < hi and end > lo
        elif inside and line.startswith("AnonHugePages:"):
            total += int(line.split()[1])
    return total


def fallbacks() -> int:
    """How often the kernel could not find a free huge page for a fault (/proc/vmstat)."""
    for line in Path("/proc/vmstat").read_text().splitlines():
        if line.startswith("thp_fault_fallback "):
            return int(line.split()[1])
    return 0


def test_outputs_are_backed_by_huge_pages_and_torch_allocations_are_not():
    before = fallbacks()
    g = torch.Generator().manual_seed(0)
    f = torch.randn(SHAPE, generator=g).requires_grad_(True)
    b = torch.tensor(0.3, requires_grad=True)
    y, mask = ops.rank_mask(f, b, return_mask=True)
    y.backward(torch.randn(SHAPE, generator=g))
    t = torch.randn(SHAPE, generator=g).requires_grad_(True)
    out = ops.intervene(f.detach().requires_grad_(True), t, mask.detach(), "sf")
    out.backward(torch.ones(SHAPE))
    control = torch.empty(SHAPE).fill_(1.0)  # the same size through torch's allocator
    assert huge_kib(control) == 0
    if fallbacks() > before:  # memory too fragmented: a fact of this machine, not of the hint
        pytest.skip("the kernel had no free huge page for some fault")
    for name, tensor in (("rank_mask y", y), ("rank_mask grad_f", f.grad), ("intervene", out),
                         ("intervene grad_t", t.grad)):  # fmt: skip
        assert huge_kib(tensor) >= 2048, name


def test_turned_off_by_the_environment():
    code = ("import torch; from cprl_fast import ops; from tests.test_huge_pages import huge_kib;"
            f"y = ops.rank_mask(torch.randn{SHAPE}, torch.tensor(0.3)); print(huge_kib(y))")
    env = {**os.environ, "CPRL_FAST_HUGE_PAGES": "0", "OMP_NUM_THREADS": "1"}
    root = Path(__file__).parents[1]
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True,
                         text=True, check=True)  # fmt: skip
    assert out.stdout.split()[-1] == "0"
