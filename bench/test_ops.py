"""pytest-benchmark suite: every op x shape x pass x provider (see bench/cases.py).

    python -m pytest bench --benchmark-json=bench/results/run.json   # time (CPU, or GPU if any)
    python -m bench.report bench/results/run.json                    # the table
    CPRL_BENCH_SMALL=1 python -m pytest bench --benchmark-disable    # CI's cheap mode

``CPRL_BENCH_DEVICE`` picks the device (default: cuda when available). Each benchmark also
checks its result against the eager reference, so a fast wrong kernel cannot pass.
"""

from __future__ import annotations

import os

import pytest
import torch

from bench.cases import all_cases, make_case
from bench.timing import (
    copy_bandwidth,
    peak_memory_bytes,
    saved_activation_bytes,
    synchronized,
)

DEVICE = torch.device(
    os.environ.get("CPRL_BENCH_DEVICE", "cuda" if torch.cuda.is_available() else "cpu")
)
CASES = list(all_cases(DEVICE))


def _ids(case) -> str:
    op, shape, pass_, provider = case
    return f"{op}-{pass_}-{'x'.join(map(str, shape))}-{provider}"


@pytest.fixture(scope="session")
def copy_gbps():
    return copy_bandwidth(DEVICE) / 1e9


def test_copy_bandwidth(benchmark, copy_gbps):
    src = torch.rand((1 << 28 if DEVICE.type == "cuda" else 1 << 26), device=DEVICE)
    dst = torch.empty_like(src)
    benchmark.group = "copy"
    benchmark.extra_info.update(op="copy", min_bytes=2 * src.numel() * 4, copy_gbps=copy_gbps)
    benchmark(synchronized(lambda: dst.copy_(src), DEVICE))
    assert torch.equal(dst, src)


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_op(benchmark, case, copy_gbps):
    op, shape, pass_, provider = case
    timed = make_case(op, shape, provider, pass_, DEVICE)
    benchmark.group = f"{op}/{pass_}/{'x'.join(map(str, shape))}"
    benchmark.extra_info.update(
        op=op, shape=list(shape), pass_=pass_, provider=provider, min_bytes=timed.min_bytes,
        copy_gbps=copy_gbps, peak_bytes=peak_memory_bytes(timed.fn, DEVICE),
    )  # fmt: skip
    if pass_ == "fwd" and op != "attack_step" and provider != "compile":
        grad_case = make_case(op, shape, provider, "fwdbwd", DEVICE)
        benchmark.extra_info["saved_bytes"] = saved_activation_bytes(grad_case.fn)
    result = benchmark(synchronized(timed.fn, DEVICE))
    if provider != "eager":
        expected = make_case(op, shape, "eager", pass_, DEVICE).fn()
        torch.testing.assert_close(result, expected, rtol=1e-4, atol=1e-5)
