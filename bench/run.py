"""Times every benchmark case once on one device; prints a table and writes JSON.

    python -m bench.run --device cpu --out bench/results/cpu.json
    python -m bench.run --device cuda --ops rank_mask --out results.json

Each row: median time, achieved GB/s (minimum bytes / time), that as a fraction of the copy
bandwidth measured in the same run, and for ``ours``/``triton`` the speed-up over ``eager`` and
``compile``; for forward passes also the bytes autograd saves for backward.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import datetime, timezone

import torch

from bench.cases import all_cases, make_case
from bench.timing import (
    copy_bandwidth,
    median_seconds,
    peak_memory_bytes,
    saved_activation_bytes,
)


def describe_machine(device: torch.device) -> dict:
    info = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
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


def run(device: torch.device, ops_filter: set[str] | None, dtype: torch.dtype) -> dict:
    rows = []
    copy_bps = copy_bandwidth(device)
    print(f"copy bandwidth: {copy_bps / 1e9:.1f} GB/s (read + write)", file=sys.stderr)
    for op, shape, pass_, provider in all_cases(device, dtype):
        if ops_filter and op not in ops_filter:
            continue
        case = make_case(op, shape, provider, pass_, device, dtype)
        seconds = median_seconds(case.fn, device)
        row = {
            "op": op, "shape": list(shape), "pass": pass_, "provider": provider,
            "dtype": str(dtype).removeprefix("torch."), "seconds": seconds,
            "gbps": case.min_bytes / seconds / 1e9,
            "copy_fraction": case.min_bytes / seconds / copy_bps,
            "peak_bytes": peak_memory_bytes(case.fn, device),
        }  # fmt: skip
        rows.append(row)
        print(f"{case.name}: {seconds * 1e3:.3f} ms, {row['gbps']:.1f} GB/s", file=sys.stderr)
    _add_ratios(rows)
    _add_saved_bytes(rows, device, dtype, ops_filter)
    return {
        "machine": describe_machine(device),
        "device": str(device),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "copy_gbps": copy_bps / 1e9,
        "rows": rows,
    }


def _add_ratios(rows: list[dict]) -> None:
    by_key = {(r["op"], tuple(r["shape"]), r["pass"], r["provider"]): r for r in rows}
    for r in rows:
        key = (r["op"], tuple(r["shape"]), r["pass"])
        for base in ("eager", "compile"):
            other = by_key.get((*key, base))
            if other is not None:
                r[f"speedup_vs_{base}"] = other["seconds"] / r["seconds"]


def _add_saved_bytes(rows, device, dtype, ops_filter) -> None:
    """Activation memory kept for backward, per differentiable op and provider (one shape)."""
    from bench.cases import SPECS, call, function, inputs

    for op in (name for name, spec in SPECS.items() if spec.grad_args):
        if ops_filter and op not in ops_filter:
            continue
        shape = next(r["shape"] for r in rows if r["op"] == op)
        for r in rows:
            if r["op"] != op or r["pass"] != "fwdbwd" or r["shape"] != shape:
                continue
            if r["provider"] == "compile":
                continue  # compiled graphs save inside their own autograd.Function
            leaves = list(inputs(op, tuple(shape), dtype, device))
            for i in SPECS[op].grad_args:
                leaves[i].requires_grad_(True)
            fn = function(op, r["provider"])
            r["saved_bytes"] = saved_activation_bytes(
                lambda op=op, fn=fn, leaves=tuple(leaves): call(op, fn, leaves)
            )


def format_table(result: dict) -> str:
    lines = [
        f"device: {result['device']} | {result['machine'].get('gpu') or result['machine']['cpu']}"
        f" | torch {result['machine']['torch']} | copy {result['copy_gbps']:.1f} GB/s",
        "",
        "| op | pass | shape | provider | ms | GB/s | % copy | x eager | x compile | saved MB |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        saved = r.get("saved_bytes")
        lines.append(
            f"| {r['op']} | {r['pass']} | {'x'.join(map(str, r['shape']))} | {r['provider']} "
            f"| {r['seconds'] * 1e3:.3f} | {r['gbps']:.1f} | {100 * r['copy_fraction']:.0f} "
            f"| {r.get('speedup_vs_eager', float('nan')):.2f} "
            f"| {r.get('speedup_vs_compile', float('nan')):.2f} "
            f"| {'' if saved is None else f'{saved / 2**20:.1f}'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ops", default="", help="comma-separated subset of the ops")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--out", help="write the JSON result here")
    parser.add_argument("--markdown", help="write the table as markdown here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    ops_filter = {o for o in args.ops.split(",") if o} or None
    result = run(device, ops_filter, getattr(torch, args.dtype))
    table = format_table(result)
    print(table)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(table + "\n")


if __name__ == "__main__":
    main()
