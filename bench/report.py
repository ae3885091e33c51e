"""Prints one table from a pytest-benchmark JSON file written by ``bench/test_ops.py``, in the
format of ``python -m bench.run`` (the same table code).

    python -m bench.report bench/results/run.json [--markdown out.md]

Benchmarks that are not op cases (the end-to-end ones, which carry no ``op``) are left out.
"""

from __future__ import annotations

import argparse
import json

from bench.run import add_ratios, format_table


def rows_of(data: dict) -> tuple[list[dict], float]:
    """The op rows of a pytest-benchmark JSON file as bench.run rows, and the copy bandwidth."""
    copy_gbps = float("nan")
    rows = []
    for b in data["benchmarks"]:
        e = b.get("extra_info", {})
        if e.get("op") == "copy":
            copy_gbps = e["copy_gbps"]
            continue
        if "op" not in e:
            continue
        t = b["stats"]["median"]
        rows.append({
            "op": e["op"], "shape": e["shape"], "pass": e["pass_"], "provider": e["provider"],
            "dtype": e.get("dtype", "float32"), "seconds": t, "gbps": e["min_bytes"] / t / 1e9,
            "copy_fraction": e["min_bytes"] / t / (e["copy_gbps"] * 1e9),
            "saved_bytes": e.get("saved_bytes"),
        })  # fmt: skip
    add_ratios(rows)
    return rows, copy_gbps


def table(data: dict) -> str:
    rows, copy_gbps = rows_of(data)
    machine = data.get("machine_info", {})
    cpu = machine.get("cpu", {}).get("brand_raw", machine.get("processor", "?"))
    result = {"device": "pytest-benchmark", "machine": {"cpu": cpu, "torch": "?"},
              "copy_gbps": copy_gbps, "rows": rows}  # fmt: skip
    return format_table(result)


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
