"""With CPRL_FAST_HUGE_PAGES=1 the CPU kernels advise their large fresh outputs for transparent
huge pages (csrc/cpu/huge_pages.h): the outputs of rank_mask and intervene, forward and backward,
are backed by huge pages where THP is in "madvise" mode, while torch's own allocation of the same
size is not (the hint is per buffer, not a process setting). Without it (the default) or with
any other value, no output is advised.
Each check runs in a fresh process, so no allocation left by other tests decides where the
outputs land."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")
pytestmark = pytest.mark.skipif(
    not THP.exists() or "[madvise]" not in THP.read_text(),
    reason="transparent huge pages are not in madvise mode here",
)
# 48 MiB of float32: above the hint's 8 MiB, and above the 32 MiB up to which glibc hands freed
# memory back out (already touched: no fault to take a huge page)
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


def measure() -> dict[str, int]:
    """Huge kB under each output of the two ops, forward and backward, and under a torch
    allocation of the same size; ``fallbacks``: huge-page faults the kernel could not serve;
    ``enabled``: what :func:`cprl_fast.cpu_huge_pages` says."""
    from cprl_fast import cpu_huge_pages, ops

    before = fallbacks()
    g = torch.Generator().manual_seed(0)
    f = torch.randn(SHAPE, generator=g).requires_grad_(True)
    b = torch.tensor(0.3, requires_grad=True)
    y, mask = ops.rank_mask(f, b, return_mask=True)
    (grad_f,) = torch.autograd.grad(y, f, torch.randn(SHAPE, generator=g))
    t = torch.randn(SHAPE, generator=g).requires_grad_(True)
    out = ops.intervene(f.detach(), t, mask.detach(), "sf")
    (grad_t,) = torch.autograd.grad(out, t, torch.ones(SHAPE))
    control = torch.empty(SHAPE).fill_(1.0)
    kib = {"rank_mask y": y, "rank_mask grad_f": grad_f, "intervene": out,
           "intervene grad_t": grad_t, "torch": control}  # fmt: skip
    return {**{k: huge_kib(v) for k, v in kib.items()}, "fallbacks": fallbacks() - before,
            "enabled": int(cpu_huge_pages())}


def _in_fresh_process(hint: str | None) -> dict[str, int]:
    """:func:`measure` in a fresh process with CPRL_FAST_HUGE_PAGES=``hint`` (None: unset)."""
    code = "import json; from tests.test_huge_pages import measure; print(json.dumps(measure()))"
    env = {k: v for k, v in os.environ.items() if k != "CPRL_FAST_HUGE_PAGES"}
    env = {**env, "OMP_NUM_THREADS": "1", **({"CPRL_FAST_HUGE_PAGES": hint} if hint else {})}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=Path(__file__).parents[1],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_outputs_are_backed_by_huge_pages_and_torch_allocations_are_not():
    kib = _in_fresh_process("1")
    assert kib.pop("enabled") == 1
    assert kib.pop("torch") == 0
    if kib.pop("fallbacks"):  # memory too fragmented: a fact of this machine, not of the hint
        pytest.skip("the kernel had no free huge page for some fault")
    assert all(v >= 2048 for v in kib.values()), kib


@pytest.mark.slow
@pytest.mark.parametrize("hint", [None, "0", "yes"])
def test_off_by_default_and_for_any_other_value(hint):
    kib = _in_fresh_process(hint)
    assert kib.pop("enabled") == 0
    kib.pop("fallbacks")
    assert set(kib.values()) == {0}, kib
