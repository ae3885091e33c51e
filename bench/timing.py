"""Timers, copy bandwidth and activation memory for the benchmarks.

:func:`median_seconds` times one callable: on a GPU from CUDA events through
``triton.testing.do_bench`` (median of repeats, L2 flushed between them), on the CPU from
``time.perf_counter`` (median of repeats after warm-up). :func:`interleaved` times several
alternating, per round, with wall, host and (CUDA) device time per call in separate columns;
:func:`cuda_graphed` captures a callable in a CUDA graph so that its device time is its
kernels' alone; :func:`gpu_busy_fraction` says how much of a wall time the GPU was busy.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

#: Rounds of :func:`interleaved`, and synchronised calls per side and round, on CUDA (issue 25:
#: at least 21 and 20, so that no number rests on one call); on the CPU one call per round, and
#: each benchmark's own number of rounds.
CUDA_ROUNDS, CUDA_CALLS = 21, 20


def rounds_and_calls(device: torch.device, rounds: int | None, calls: int | None,
                     cpu_rounds: int) -> tuple[int, int]:  # fmt: skip
    """``rounds`` and ``calls`` where given, else the defaults for ``device``'s type."""
    cuda = device.type == "cuda"
    return rounds or (CUDA_ROUNDS if cuda else cpu_rounds), calls or (CUDA_CALLS if cuda else 1)


def add_rounds_args(parser: argparse.ArgumentParser, cpu_rounds: int) -> None:
    """``--rounds`` and ``--calls``, read by :func:`rounds_and_calls`."""
    parser.add_argument("--rounds", type=int, help="alternating rounds (default: "
                        f"{CUDA_ROUNDS} on CUDA, {cpu_rounds} on the CPU)")  # fmt: skip
    parser.add_argument("--calls", type=int, help="synchronised calls per side per round "
                        f"(default: {CUDA_CALLS} on CUDA, 1 on the CPU)")  # fmt: skip


def synchronized(fn: Callable[[], object], device: torch.device) -> Callable[[], object]:
    """``fn`` followed by a synchronisation of ``device`` when it is a GPU (so that a timer that
    reads the host clock, as pytest-benchmark's does, times the work), else ``fn`` itself."""
    if device.type != "cuda":
        return fn

    def run():
        out = fn()
        torch.cuda.synchronize(device)
        return out

    return run


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


def _spread(t: list[float]) -> dict:
    q = statistics.quantiles(t, n=4) if len(t) >= 2 else [t[0]] * 3
    return {"median_s": statistics.median(t), "mean_s": statistics.mean(t), "min_s": min(t),
            "max_s": max(t), "iqr_s": q[2] - q[0], "rounds": t}  # fmt: skip


def interleaved(fns: dict[str, Callable[[], object]], device: torch.device, rounds: int = 11,
                warmup: int = 2, calls: int = 1,
                flush: Callable[[], object] | None = None) -> dict[str, dict]:  # fmt: skip
    """Times several callables alternating: each round calls every one ``calls`` times in a row
    (the order rotates from round to round), so a slow patch of a shared machine hits all of
    them alike. Per name, in seconds per call:

    - ``median_s``, ``mean_s``, ``min_s``, ``max_s``, ``iqr_s``, ``rounds``: wall time, the
      device synchronised before the first call and after the last (the mean is what a loop's
      total time follows: a rare stall moves it, not the median);
    - ``host``: the same for host time, from the first call until the last returned, before
      waiting for the device (on the CPU, where nothing runs behind the host, the wall time);
    - ``device`` (CUDA only, else None): the time between two CUDA events recorded on the
      current stream around the calls, i.e. device time including any gap the host leaves.

    ``flush`` (CUDA only; :func:`l2_flush`): called before every call, outside its events and
    host time (the wall time includes it), so that no call finds its inputs in the L2 cache
    the previous one left; device time is then the sum of per-call event pairs.

    Ratios between two names are best taken per round (:func:`ratio`)."""
    if calls < 1 or rounds < 1:
        raise ValueError(f"calls and rounds must be >= 1, got {calls}, {rounds}")
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    cuda = device.type == "cuda"
    flush = flush if cuda else None
    wall: dict[str, list[float]] = {n: [] for n in names}
    host: dict[str, list[float]] = {n: [] for n in names}
    dev: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn = fns[name]
            events = []
            if cuda:
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            hosted = 0.0
            for i in range(calls):
                if flush is not None:
                    flush()
                if cuda and (flush is not None or i == 0):
                    events.append(torch.cuda.Event(enable_timing=True))
                    events[-1].record()
                t1 = time.perf_counter()
                fn()
                hosted += time.perf_counter() - t1
                if cuda and (flush is not None or i == calls - 1):
                    events.append(torch.cuda.Event(enable_timing=True))
                    events[-1].record()
            if cuda:
                torch.cuda.synchronize(device)
                pairs = zip(events[::2], events[1::2], strict=True)
                dev[name].append(sum(a.elapsed_time(b) for a, b in pairs) / 1e3 / calls)
            wall[name].append((time.perf_counter() - t0) / calls)
            host[name].append(hosted / calls)
    return {n: {**_spread(wall[n]), "calls": calls, "host": _spread(host[n]),
                "device": _spread(dev[n]) if cuda else None} for n in names}  # fmt: skip


def l2_flush(device: torch.device, nbytes: int = 256 << 20) -> Callable[[], object]:
    """A callable that overwrites ``nbytes`` (default 256 MiB, several times an H100's or
    H200's L2) on ``device``, as ``triton.testing.do_bench`` does between repeats."""
    buffer = torch.empty(nbytes, dtype=torch.int8, device=device)
    return buffer.zero_


def per_call(timed: dict) -> dict:
    """One name of :func:`interleaved` as flat columns: median seconds per call of wall, host and
    device time (``device_s`` None off CUDA)."""
    device = timed["device"]
    return {"wall_s": timed["median_s"], "host_s": timed["host"]["median_s"],
            "device_s": device["median_s"] if device else None}  # fmt: skip


def ratio(timed: dict[str, dict], num: str, den: str, clock: str = "wall") -> dict:
    """The median over rounds of ``num``'s time over ``den``'s in the same round, with the
    spread of those per-round ratios (min, max). ``clock``: ``wall``, ``host`` or ``device``
    (CUDA only)."""

    def rounds(name: str) -> list[float]:
        return timed[name]["rounds"] if clock == "wall" else timed[name][clock]["rounds"]

    r = [a / b for a, b in zip(rounds(num), rounds(den), strict=True)]
    return {"median": statistics.median(r), "min": min(r), "max": max(r)}


def cuda_graphed(fn: Callable[[], object], device: torch.device,
                 warmup: int = 3) -> Callable[[], None]:  # fmt: skip
    """``fn`` captured once in a CUDA graph; the returned callable replays it: the same kernels
    on the same buffers, with no host work per kernel, so its device time is the kernels'
    alone (for timing: the replay returns nothing). ``fn`` runs ``warmup`` times on a side
    stream first (lazy initialisation, compilation, cuDNN's choices and the allocator settle,
    as torch.cuda.graph requires). Raises what capture raises (a host synchronisation or a
    CPU tensor inside ``fn``)."""
    if device.type != "cuda":
        raise ValueError(f"a CUDA graph needs a CUDA device, got {device}")
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    torch.cuda.synchronize(device)
    return graph.replay


def covered_seconds(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of ``(start, end)`` intervals (kernels on several streams overlap)."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


def gpu_busy_fraction(fn: Callable[[], object], device: torch.device,
                      calls: int = 20) -> float | None:  # fmt: skip
    """The share of the wall time of ``calls`` synchronised calls of ``fn`` in which some GPU
    kernel, copy or set runs (the union of their intervals under torch.profiler, over the wall
    time); near 1: the device is the bottleneck, well below: the host or launches are. None on
    a CPU device, or when the profiler records no device activity."""
    if device.type != "cuda":
        return None
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        torch.cuda.synchronize(device)
        wall = time.perf_counter() - t0
    spans = [(e.time_range.start / 1e6, e.time_range.end / 1e6) for e in prof.events()
             if e.device_type == DeviceType.CUDA]  # fmt: skip
    if not spans or wall <= 0:
        return None
    return min(1.0, covered_seconds(spans) / wall)


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
