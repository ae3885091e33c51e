"""Times every benchmark case on one device; prints each row as it is measured and rewrites the
JSON after every row, so a killed run loses nothing it measured.

    python -m bench.run --device cpu --out bench/results/cpu.json
    python -m bench.run --device cuda --dtype float32,bfloat16 --out bench.json --markdown bench.md
    python -m bench.run --device cuda --layout channels_last --dtype bfloat16 --passes fwdbwd

The providers of one op, shape, pass, dtype and layout (NCHW ``contiguous`` or NHWC
``channels_last``: the op's 4-D inputs and the output's gradient) are timed together,
alternating round by round (:func:`bench.timing.interleaved`: ``--rounds`` rounds of
``--calls`` calls each; on CUDA the L2 cache overwritten before every call, outside its
timing). On CUDA each provider is timed twice: plain calls (device time from CUDA events, host
time per call in its own column) and replays of the same call captured in a CUDA graph (its
kernels alone, no launch overhead: ``seconds``, ``timing: cuda-graph``; a provider that cannot
be captured keeps its event time and says why). On the CPU ``seconds`` is the wall time (``timing:
wall``), which is host time there.

Each row: that time, achieved GB/s (the op's minimum bytes / time), that as a fraction of the
copy bandwidth measured in the same run, for ``native``/``triton`` the speed-up over ``eager``
and over ``compile`` (and triton's time over native's; both sides on the same clock), for
forward + backward the bytes autograd saves for backward, and ``check``: the row's result
against eager (``ok`` or the mismatch), so a fast wrong kernel shows.
"""

from __future__ import annotations

import argparse
import platform
import sys
from datetime import datetime, timezone

import torch

from bench.cases import (
    LAYOUTS,
    SPECS,
    call,
    function,
    groups,
    inputs,
    make_case,
    option_values,
    providers_for,
)
from bench.timing import (
    add_rounds_args,
    copy_bandwidth,
    cuda_graphed,
    interleaved,
    l2_flush,
    peak_memory_bytes,
    rounds_and_calls,
    saved_activation_bytes,
)
from cprl_fast.installation import cpu_name
from cprl_fast.io import write_json_atomic, write_text_atomic

#: Rounds per row on the CPU (one call each): the ops are timed at many rows.
CPU_ROUNDS = 7

#: Tolerance of a benchmark row's result against eager, per dtype (sums over large shapes).
CHECK_TOLERANCE = {
    torch.float32: {"rtol": 1e-4, "atol": 1e-5},
    torch.bfloat16: {"rtol": 2e-2, "atol": 2e-2},
    torch.float16: {"rtol": 5e-3, "atol": 5e-3},
}


def describe_machine(device: torch.device) -> dict:
    info = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = props.name
        info["sms"] = props.multi_processor_count
        try:
            import triton

            info["triton"] = triton.__version__
        except ImportError:
            pass
    return info


def check_against_eager(case_fn, op, shape, pass_, device, dtype,
                        layout: str = "contiguous") -> str:  # fmt: skip
    """``ok`` when this provider's result is close to eager's. Where it is not (a reduction over
    thousands of pixels differs in the last bits with the order of summation: torch.compile
    differs from eager there too), ``ok (float64)`` when, per output, its root-mean-square error
    against a float64 evaluation of the same inputs is at most twice eager's plus the dtype's
    atol (the rule of Inductor's accuracy checks); else the first lines of the mismatch."""
    got = case_fn()
    want = make_case(op, shape, "eager", pass_, device, dtype, layout=layout).fn()
    try:
        torch.testing.assert_close(got, want, **CHECK_TOLERANCE[dtype])
        return "ok"
    except AssertionError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        mismatch = "MISMATCH: " + "; ".join(lines[:3])
    exact = make_case(op, shape, "eager", pass_, device, dtype, upcast=True, layout=layout).fn()
    atol = CHECK_TOLERANCE[dtype]["atol"]
    for g, w, e in zip(_tensors(got), _tensors(want), _tensors(exact), strict=True):
        if _rmse(g, e) > 2 * _rmse(w, e) + atol:
            return mismatch
    return "ok (float64)"


def _tensors(out) -> tuple[torch.Tensor, ...]:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _rmse(a: torch.Tensor, exact: torch.Tensor) -> float:
    return (a.double() - exact).pow(2).mean().sqrt().item()


def saved_bytes(op: str, shape, provider: str, device, dtype,
                layout: str = "contiguous") -> int | None:  # fmt: skip
    """Activation memory autograd keeps for backward (eager-mode providers of a differentiable
    op; a compiled graph saves inside its own autograd.Function)."""
    if not SPECS[op].grad_args or provider == "compile":
        return None
    leaves = list(inputs(op, tuple(shape), dtype, device, layout=layout))
    for i in SPECS[op].grad_args:
        leaves[i].requires_grad_(True)
    fn = function(op, provider)
    return saved_activation_bytes(lambda: call(op, fn, tuple(leaves)))


#: The clocks two rows are compared on, best first: the first that both rows have.
CLOCKS = ("graph_seconds", "event_seconds", "wall_seconds")


def add_ratios(rows: list[dict]) -> None:
    """``speedup_vs_<base>`` on every row that has a ``base`` row (eager, compile, native) of the
    same op, shape, pass, dtype and layout: base time over this row's, on the first clock of
    :data:`CLOCKS` both rows have (rows without those columns: ``seconds``)."""

    def group(r: dict) -> tuple:
        return r["op"], tuple(r["shape"]), r["pass"], r["dtype"], r.get("layout", "contiguous")

    by_key = {(*group(r), r["provider"]): r for r in rows}
    for r in rows:
        key = group(r)
        for base in ("eager", "compile", "native"):
            other = by_key.get((*key, base))
            if other is not None and other is not r:
                clock = next((c for c in CLOCKS if r.get(c) and other.get(c)), "seconds")
                r[f"speedup_vs_{base}"] = other[clock] / r[clock]


def time_providers(cases: dict, device: torch.device, rounds: int, calls: int,
                   graphs: bool) -> dict[str, dict]:  # fmt: skip
    """Per provider: ``wall_seconds``, ``host_seconds`` and (CUDA) ``event_seconds`` per call of
    plain calls, and with ``graphs`` (CUDA) ``graph_seconds`` of graph replays, all providers
    alternating; ``seconds`` and ``timing``: the clock a row is read on (``graph_error`` where
    capture failed)."""
    fns = {p: c.fn for p, c in cases.items()}
    flush = l2_flush(device) if device.type == "cuda" else None  # every call from HBM
    plain = interleaved(fns, device, rounds, calls=calls, flush=flush)
    out = {p: {"wall_seconds": t["median_s"], "host_seconds": t["host"]["median_s"],
               "event_seconds": t["device"]["median_s"] if t["device"] else None,
               "graph_seconds": None} for p, t in plain.items()}  # fmt: skip
    if graphs:
        replays = {}
        for p, fn in fns.items():
            try:
                replays[p] = cuda_graphed(fn, device)
            except Exception as err:  # the row keeps its event time and says why
                out[p]["graph_error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
                torch.cuda.synchronize(device)
        if replays:
            for p, t in interleaved(replays, device, rounds, calls=calls, flush=flush).items():
                out[p]["graph_seconds"] = t["device"]["median_s"]
    for row in out.values():
        clock = next(c for c in CLOCKS if row[c])
        row["seconds"] = row[clock]
        row["timing"] = {"graph_seconds": "cuda-graph", "event_seconds": "cuda-events",
                         "wall_seconds": "wall"}[clock]  # fmt: skip
    return out


def run(device: torch.device, ops_filter: set[str] | None, dtypes: list[torch.dtype],
        out: str | None = None, markdown: str | None = None,
        passes_filter: set[str] | None = None, rounds: int | None = None,
        calls: int | None = None, layouts: tuple[str, ...] = ("contiguous",)) -> dict:  # fmt: skip
    """Times every group of :func:`groups` in every dtype and layout, in that order (rounds and
    calls per round: :func:`rounds_and_calls`, :data:`CPU_ROUNDS` on the CPU); writes ``out`` and
    ``markdown`` after every group."""
    cuda = device.type == "cuda"
    rounds, calls = rounds_and_calls(device, rounds, calls, cpu_rounds=CPU_ROUNDS)
    copy_bps = copy_bandwidth(device)
    result = {
        "machine": describe_machine(device),
        "device": str(device),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "copy_gbps": copy_bps / 1e9,
        "rounds": rounds,
        "calls_per_round": calls,
        "timing": "providers of a row alternating per round; " + (
            "seconds: CUDA-event device time of graph replays (else of plain calls)"
            if cuda else "seconds: wall time"),
        "rows": [],
    }  # fmt: skip
    print(f"copy bandwidth: {copy_bps / 1e9:.1f} GB/s (read + write)", flush=True)
    for dtype, layout in ((d, lay) for d in dtypes for lay in layouts):
        for op, shape, pass_ in groups(device, ops_filter, passes_filter):
            cases = {p: make_case(op, shape, p, pass_, device, dtype, layout=layout)
                     for p in providers_for(device)}  # fmt: skip
            # bwd's graph is built once outside any capture, so its backward runs on that
            # stream, not the capturing one: timed by events only
            timed = time_providers(cases, device, rounds, calls, graphs=cuda and pass_ != "bwd")
            rows = []
            for provider, case in cases.items():
                t = timed[provider]
                row = {
                    "op": op, "shape": list(shape), "pass": pass_, "provider": provider,
                    "dtype": str(dtype).removeprefix("torch."), "layout": layout, **t,
                    "gbps": case.min_bytes / t["seconds"] / 1e9,
                    "copy_fraction": case.min_bytes / t["seconds"] / copy_bps,
                    "peak_bytes": peak_memory_bytes(case.fn, device),
                }  # fmt: skip
                if provider != "eager":
                    row["check"] = check_against_eager(case.fn, op, shape, pass_, device, dtype,
                                                       layout)  # fmt: skip
                if pass_ == "fwdbwd":
                    row["saved_bytes"] = saved_bytes(op, shape, provider, device, dtype, layout)
                rows.append(row)
            result["rows"] += rows
            add_ratios(result["rows"])
            for row in rows:
                print(format_row(row), flush=True)
            if out:
                write_json_atomic(out, result)
            if markdown:
                write_text_atomic(markdown, format_table(result) + "\n")
    return result


COLUMNS = ("| op | pass | dtype | layout | shape | provider | ms | timing | host us/call | GB/s "
           "| % copy | x eager | x compile | triton/native time | saved MB | check |")  # fmt: skip


def format_row(r: dict) -> str:
    saved = r.get("saved_bytes")
    tri = (
        1 / r["speedup_vs_native"]
        if r["provider"] == "triton" and "speedup_vs_native" in r
        else None
    )
    host = r.get("host_seconds")
    return (
        f"| {r['op']} | {r['pass']} | {r['dtype']} | {r.get('layout', 'contiguous')} "
        f"| {'x'.join(map(str, r['shape']))} "
        f"| {r['provider']} | {r['seconds'] * 1e3:.3f} | {r.get('timing', '')} "
        f"| {'' if host is None else f'{host * 1e6:.0f}'} | {r['gbps']:.1f} "
        f"| {100 * r['copy_fraction']:.0f} | {r.get('speedup_vs_eager', float('nan')):.2f} "
        f"| {r.get('speedup_vs_compile', float('nan')):.2f} "
        f"| {'' if tri is None else f'{tri:.2f}'} "
        f"| {'' if saved is None else f'{saved / 2**20:.1f}'} | {r.get('check', '')} |"
    )


def format_table(result: dict) -> str:
    lines = [
        f"device: {result['device']} | {result['machine'].get('gpu') or result['machine']['cpu']}"
        f" | torch {result['machine']['torch']} | copy {result['copy_gbps']:.1f} GB/s",
        "",
        COLUMNS,
        "| --- | --- | --- | --- | --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: | --- |",
    ]
    lines += [format_row(r) for r in result["rows"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ops", default="", help="comma-separated subset of the ops")
    parser.add_argument("--passes", default="", help="comma-separated subset of fwd, bwd, fwdbwd")
    add_rounds_args(parser, cpu_rounds=CPU_ROUNDS)
    parser.add_argument("--dtype", default="float32",
                        help="comma-separated: float32, bfloat16, float16")  # fmt: skip
    parser.add_argument("--layout", default="contiguous",
                        help="comma-separated: " + ", ".join(LAYOUTS))  # fmt: skip
    parser.add_argument("--out", help="write the JSON result here (after every row)")
    parser.add_argument("--markdown", help="write the table as markdown here (after every row)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    try:
        ops_filter = set(option_values("--ops", args.ops, SPECS, required=False)) or None
        passes_filter = set(option_values("--passes", args.passes, ("fwd", "bwd", "fwdbwd"),
                                          required=False)) or None  # fmt: skip
        layouts = tuple(option_values("--layout", args.layout, LAYOUTS))
    except ValueError as err:
        sys.exit(f"bench.run: {err}")
    dtypes = [getattr(torch, d.strip()) for d in args.dtype.split(",") if d.strip()]
    for d in dtypes:
        if d not in CHECK_TOLERANCE:
            sys.exit(f"bench.run: --dtype must be float32, bfloat16 or float16, got {d}")
    print(COLUMNS, flush=True)
    run(device, ops_filter, dtypes, args.out, args.markdown, passes_filter, args.rounds,
        args.calls, layouts)


if __name__ == "__main__":
    main()
