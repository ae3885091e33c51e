"""Prints one table from a pytest-benchmark JSON file written by ``bench/test_ops.py``.

    python -m bench.report bench/results/run.json [--markdown out.md]

Columns: median time, achieved GB/s (minimum bytes / median), % of the copy bandwidth measured
in the same run, speed-up over eager and over torch.compile, bytes saved for backward.
"""

from __future__ import annotations

import argparse
import json


def table(data: dict) -> str:
    rows = [b for b in data["benchmarks"] if b["extra_info"].get("op") != "copy"]
    copy = next((b for b in data["benchmarks"] if b["extra_info"].get("op") == "copy"), None)
    median = {b["name"]: b["stats"]["median"] for b in data["benchmarks"]}
    by_key = {}
    for b in rows:
        e = b["extra_info"]
        by_key[(e["op"], tuple(e["shape"]), e["pass_"], e["provider"])] = median[b["name"]]
    machine = data.get("machine_info", {})
    copy_gbps = copy["extra_info"]["copy_gbps"] if copy else float("nan")
    out = [
        f"machine: {machine.get('cpu', {}).get('brand_raw', machine.get('processor', '?'))} | "
        f"copy bandwidth {copy_gbps:.1f} GB/s",
        "",
        "| op | pass | shape | provider | ms | GB/s | % copy | x eager | x compile | saved MB |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for b in rows:
        e = b["extra_info"]
        t = median[b["name"]]
        gbps = e["min_bytes"] / t / 1e9
        key = (e["op"], tuple(e["shape"]), e["pass_"])
        eager = by_key.get((*key, "eager"), float("nan")) / t
        comp = by_key.get((*key, "compile"), float("nan")) / t
        saved = e.get("saved_bytes")
        out.append(
            f"| {e['op']} | {e['pass_']} | {'x'.join(map(str, e['shape']))} | {e['provider']} "
            f"| {t * 1e3:.3f} | {gbps:.1f} | {100 * gbps / e['copy_gbps']:.0f} | {eager:.2f} "
            f"| {comp:.2f} | {'' if saved is None else f'{saved / 2**20:.1f}'} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("json_file")
    parser.add_argument("--markdown", help="also write the table here")
    args = parser.parse_args(argv)
    with open(args.json_file) as fh:
        text = table(json.load(fh))
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
