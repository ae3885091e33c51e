"""Timers, copy bandwidth and activation memory for the benchmarks.

On a GPU, times come from CUDA events through ``triton.testing.do_bench`` (median of repeats,
L2 flushed between them); on the CPU from ``time.perf_counter`` (median of repeats after warm-up).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def median_seconds(fn: Callable[[], object], device: torch.device, min_time: float = 0.5,
                   max_reps: int = 50) -> float:  # fmt: skip
    """Median wall time of one call of ``fn`` in seconds."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return do_bench(fn, warmup=25, rep=100, return_mode="median") / 1e3
    fn()
    fn()  # warm-up: allocator, caches, lazy compilation
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < min_time and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved(fns: dict[str, Callable[[], object]], device: torch.device, rounds: int = 11,
                warmup: int = 2) -> dict[str, dict]:  # fmt: skip
    """Times several callables alternating: each round calls every one once (the order rotates
    from round to round), so a slow patch of a shared machine hits all of them alike. Returns
    per name the median seconds, the spread (min, max, interquartile range) and the per-round
    times; ratios between two names are best taken per round (:func:`ratio`)."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            fns[name]()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[name].append(time.perf_counter() - t0)
    out = {}
    for name, t in times.items():
        q = statistics.quantiles(t, n=4) if len(t) >= 2 else [t[0]] * 3
        out[name] = {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t),
                     "iqr_s": q[2] - q[0], "rounds": t}  # fmt: skip
    return out


def ratio(timed: dict[str, dict], num: str, den: str) -> dict:
    """The median over rounds of ``num``'s time over ``den``'s in the same round, with the
    spread of those per-round ratios (min, max)."""
    r = [a / b for a, b in zip(timed[num]["rounds"], timed[den]["rounds"], strict=True)]
    return {"median": statistics.median(r), "min": min(r), "max": max(r)}


def copy_bandwidth(device: torch.device, nbytes: int | None = None) -> float:
    """Bytes per second of a large tensor copy (``dst.copy_(src)``), counting read + write."""
    if nbytes is None:
        nbytes = 1 << 30 if device.type == "cuda" else 1 << 28
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    seconds = median_seconds(lambda: dst.copy_(src), device)
    return 2 * nbytes / seconds


def saved_activation_bytes(fn: Callable[[], object]) -> int:
    """Bytes of the distinct tensors autograd saves for backward while ``fn`` runs."""
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor):
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        seen[key] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def peak_memory_bytes(fn: Callable[[], object], device: torch.device) -> int | None:
    """Peak CUDA memory allocated during ``fn`` beyond what was allocated before (GPU only)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base
