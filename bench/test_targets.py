"""bench/targets.py in its quick mode: every target gets a row whose verdict follows from its
value and goal (the real numbers come from the full run, committed under bench/results/)."""

from __future__ import annotations

import json
import math

from bench.targets import main


def test_quick_targets_report_a_consistent_verdict(tmp_path, capsys):
    out = tmp_path / "targets.json"
    assert main(["--quick", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["target"][:2] for r in rows] == ["1.", "2.", "2.", "3."]
    for r in rows:
        sign, goal = r["goal"].split()
        v = r["value"]
        assert math.isfinite(v) and v > 0
        assert r["pass"] == (v <= float(goal) if sign == "<=" else v >= float(goal))
    printed = capsys.readouterr().out
    assert printed.startswith("threads: ") and printed.count("PASS") + printed.count("FAIL") == 4
