"""bench.timing's clocks and bench.run's grouping of providers: interleaved rounds with wall,
host and device columns, the union of kernel intervals behind the GPU-busy fraction, ratios
taken on a clock both rows have, and what a CPU device refuses or leaves empty."""

from __future__ import annotations

import argparse
import time

import pytest
import torch

from bench.cases import groups
from bench.run import add_ratios, time_providers
from bench.timing import (
    CUDA_CALLS,
    CUDA_ROUNDS,
    add_rounds_args,
    covered_seconds,
    cuda_graphed,
    gpu_busy_fraction,
    interleaved,
    ratio,
    rounds_and_calls,
)

CPU = torch.device("cpu")


def test_rounds_and_calls_default_by_device_and_keep_what_was_given():
    cuda = torch.device("cuda")
    assert rounds_and_calls(CPU, None, None, cpu_rounds=7) == (7, 1)
    assert rounds_and_calls(cuda, None, None, cpu_rounds=7) == (CUDA_ROUNDS, CUDA_CALLS)
    assert CUDA_ROUNDS >= 21 and CUDA_CALLS >= 20  # issue 25: the least for a GPU number
    assert rounds_and_calls(cuda, 3, 2, cpu_rounds=7) == (3, 2)
    parser = argparse.ArgumentParser()
    add_rounds_args(parser, cpu_rounds=5)
    args = parser.parse_args(["--calls", "4"])
    assert rounds_and_calls(CPU, args.rounds, args.calls, cpu_rounds=5) == (5, 4)
    assert "5 on the CPU" in parser.format_help()


def test_interleaved_calls_each_side_calls_times_per_round_and_reports_per_call():
    counts = {"a": 0, "b": 0}

    def side(name, seconds):
        def fn():
            counts[name] += 1
            time.sleep(seconds)

        return fn

    timed = interleaved({"a": side("a", 0.002), "b": side("b", 0.0)}, CPU, rounds=3, warmup=1,
                        calls=8)  # fmt: skip
    assert counts == {"a": 1 + 3 * 8, "b": 1 + 3 * 8}
    a, b = timed["a"], timed["b"]
    assert len(a["rounds"]) == 3 and a["calls"] == 8
    # per call, not per round: one sleep of 2 ms, not eight (16 ms); the upper bound leaves a
    # busy machine's sleeps room to overshoot
    assert 0.0018 < a["median_s"] < 0.010
    assert b["median_s"] < a["median_s"]
    # on the CPU the host is all there is: host time is the wall time, no device column
    assert a["host"]["rounds"] == pytest.approx(a["rounds"], rel=0.05, abs=1e-5)
    assert a["device"] is None
    r = ratio(timed, "a", "b", clock="host")
    assert r["min"] <= r["median"] <= r["max"] and r["median"] > 1
    # the L2 flush is a GPU matter: on the CPU it is never called
    flushed = []
    interleaved({"a": side("a", 0)}, CPU, rounds=1, warmup=0, flush=lambda: flushed.append(1))
    assert not flushed
    with pytest.raises(ValueError, match="calls and rounds"):
        interleaved({"a": side("a", 0)}, CPU, calls=0)


def test_covered_seconds_is_the_union_of_overlapping_intervals():
    assert covered_seconds([]) == 0
    assert covered_seconds([(0, 1), (2, 3)]) == 2
    assert covered_seconds([(0, 2), (1, 3), (1.5, 2.5)]) == 3  # overlaps count once
    assert covered_seconds([(5, 6), (0, 10)]) == 10  # nested, in any order


def test_gpu_only_clocks_say_so_on_the_cpu():
    assert gpu_busy_fraction(lambda: None, CPU) is None
    with pytest.raises(ValueError, match="CUDA graph needs a CUDA device"):
        cuda_graphed(lambda: None, CPU)


def test_ratios_use_a_clock_both_rows_have():
    def row(provider, **clocks):
        return {"op": "rank_mask", "shape": [2, 8, 4, 4], "pass": "fwd", "dtype": "float32",
                "provider": provider, "seconds": 1.0, **clocks}  # fmt: skip

    # native captured in a graph, compile not: both are compared on CUDA events
    native = row("native", graph_seconds=0.5, event_seconds=1.0, wall_seconds=2.0)
    compiled = row("compile", graph_seconds=None, event_seconds=3.0, wall_seconds=3.5)
    eager = row("eager", graph_seconds=2.0, event_seconds=4.0, wall_seconds=8.0)
    add_ratios([eager, compiled, native])
    assert native["speedup_vs_compile"] == pytest.approx(3.0)
    assert native["speedup_vs_eager"] == pytest.approx(4.0)  # both have graphs
    # rows from before the clocks (committed runs): their seconds
    old = [row("native"), {**row("eager"), "seconds": 2.0}]
    add_ratios(old)
    assert old[0]["speedup_vs_eager"] == pytest.approx(2.0)


def test_time_providers_alternates_the_providers_of_a_row(monkeypatch):
    monkeypatch.setenv("CPRL_BENCH_SMALL", "1")
    found = list(groups(CPU, {"rank_mask"}, {"fwdbwd"}))
    assert found and {(op, p) for op, _, p in found} == {("rank_mask", "fwdbwd")}
    order = []

    class Case:
        def __init__(self, name):
            self.fn = lambda: order.append(name)

    timed = time_providers({"eager": Case("eager"), "native": Case("native")}, CPU, rounds=2,
                           calls=1, graphs=False)  # fmt: skip
    # warm-up, then round 0 eager first, round 1 native first
    assert order[-4:] == ["eager", "native", "native", "eager"]
    for t in timed.values():
        assert t["timing"] == "wall" and t["seconds"] == t["wall_seconds"]
        assert t["event_seconds"] is None and t["graph_seconds"] is None
        assert t["host_seconds"] > 0


class HostEvent:
    """A CUDA event stood in by the host clock (no GPU here)."""

    def __init__(self, enable_timing=False):
        self.at = None

    def record(self):
        self.at = time.perf_counter()

    def elapsed_time(self, end):  # milliseconds, as CUDA events give
        return (end.at - self.at) * 1e3


@pytest.fixture
def host_cuda_clock(monkeypatch):
    """torch.cuda's events and synchronize stood in by the host: the CUDA code paths of the
    timers run on the CPU."""
    monkeypatch.setattr(torch.cuda, "Event", HostEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)


def test_the_cuda_clocks_pair_their_events_without_a_gpu(host_cuda_clock):
    # checks how interleaved places and sums the events
    flushes = []

    def flush():
        flushes.append(1)
        time.sleep(0.010)  # outside the calls' device and host time

    timed = interleaved({"a": lambda: time.sleep(0.001)}, torch.device("cuda"), rounds=2,
                        warmup=0, calls=3, flush=flush)  # fmt: skip
    assert len(flushes) == 2 * 3
    a = timed["a"]
    # per call (1 ms), without the flushes (10 ms each); room for a busy machine's overshoot
    assert 0.0009 < a["device"]["median_s"] < 0.006
    assert 0.0009 < a["host"]["median_s"] < 0.006
    assert a["median_s"] > 0.010  # wall time includes them
    # without a flush: one event pair around all the calls of a round
    plain = interleaved({"a": lambda: time.sleep(0.001)}, torch.device("cuda"), rounds=1,
                        warmup=0, calls=10)  # fmt: skip
    assert 0.0009 < plain["a"]["device"]["median_s"] < 0.006  # per call, not per round (10 ms)


def test_a_provider_that_cannot_be_captured_keeps_its_event_time(monkeypatch, host_cuda_clock):
    import bench.run as bench_run

    monkeypatch.setattr(bench_run, "l2_flush", lambda device: lambda: None)

    def graphed(fn, device):
        if fn is cases["eager"].fn:
            raise RuntimeError("operation not permitted when stream is capturing\nmore")
        return fn

    monkeypatch.setattr(bench_run, "cuda_graphed", graphed)

    class Case:
        def __init__(self):
            self.fn = lambda: time.sleep(0.0005)

    cases = {"eager": Case(), "native": Case()}
    timed = time_providers(cases, torch.device("cuda"), rounds=1, calls=2, graphs=True)
    assert timed["native"]["timing"] == "cuda-graph"
    assert timed["native"]["seconds"] == timed["native"]["graph_seconds"] > 0
    eager = timed["eager"]
    assert eager["timing"] == "cuda-events" and eager["graph_seconds"] is None
    assert eager["graph_error"] == "RuntimeError: operation not permitted when stream is capturing"
    assert eager["seconds"] == eager["event_seconds"] > 0
