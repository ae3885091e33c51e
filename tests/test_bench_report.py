"""bench.report reads a whole pytest-benchmark file (op cases, the copy, end-to-end cases that
carry no op) and prints bench.run's table."""

from __future__ import annotations

from bench.report import table


def _bench(name, median, **extra):
    return {"name": name, "stats": {"median": median}, "extra_info": extra}


def test_report_of_a_whole_suite():
    e = 1 << 20
    data = {
        "machine_info": {"cpu": {"brand_raw": "test cpu"}},
        "benchmarks": [
            _bench("copy", 0.001, op="copy", min_bytes=8 * e, copy_gbps=10.0),
            _bench("eager", 0.004, op="rank_mask", shape=[2, 8, 4, 4], pass_="fwd",
                   provider="eager", min_bytes=2 * e, copy_gbps=10.0),
            _bench("native", 0.001, op="rank_mask", shape=[2, 8, 4, 4], pass_="fwd",
                   provider="native", min_bytes=2 * e, copy_gbps=10.0),
            _bench("e2e", 0.5),  # an end-to-end case: no op
        ],
    }  # fmt: skip
    text = table(data)
    native = next(line for line in text.splitlines() if "| native |" in line)
    assert "| 4.00 |" in native  # 4x eager
    assert "test cpu" in text and "e2e" not in text
