"""bench.gpu_targets reads a committed GPU run: each target PASS or FAIL with the value and file
it came from, and MISSING (never a pass) for what the run did not measure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.gpu_targets import SHAPES, gpu_targets, report
from bench.targets import main as targets_main

RUNS = Path(__file__).resolve().parents[1] / "bench" / "results"


def _by_name(targets):
    return {t.name: t for t in targets}


def test_the_committed_h200_run_reads_as_its_files_say():
    t = _by_name(gpu_targets(RUNS / "h200-2026-11-26"))
    e2e = json.loads((RUNS / "h200-2026-11-26" / "e2e.json").read_text())
    ca = t["CA-ResNet-50 / ResNet-50 forward + backward"]
    assert ca.value == pytest.approx(e2e["cprl_over_resnet"]) and ca.passed is False
    assert ca.source == "e2e.json"
    share = t["rank_mask fwd+bwd [16, 256, 80, 80] float32, share of copy bandwidth"]
    assert share.value == pytest.approx(0.3954, abs=1e-4) and share.passed is False
    over = t["rank_mask fwd+bwd [16, 256, 80, 80] float32, speed-up over torch.compile"]
    assert over.value == pytest.approx(2.84, abs=0.01) and over.passed is True
    bf16 = t["intervene fwd+bwd [16, 256, 80, 80] bfloat16, share of copy bandwidth"]
    # the run predates the timing column: its rows were single calls
    assert bf16.source == "second-call/bench-bf16-intervene.json (single calls)"
    missing = t[f"rank_mask fwd+bwd {list(SHAPES[1])} float32, share of copy bandwidth"]
    assert missing.passed is None and missing.value is None
    assert t["audit suite time, 250 images, s"].passed is None


def test_the_report_counts_and_the_targets_command_prints_it(tmp_path, capsys):
    (tmp_path / "e2e.json").write_text(json.dumps({"cprl_over_resnet": 1.02}))
    text = report(tmp_path, host=tmp_path / "none.json")
    assert "PASS    CA-ResNet-50 / ResNet-50 forward + backward: 1.02 (goal <= 1.05)" in text
    total = 2 * 2 * 2 * len(SHAPES) * 3 + 6 + 1  # ops x layouts x dtypes x shapes x 3, e2e, host
    assert text.splitlines()[-1].endswith(f"1 PASS, 0 FAIL, {total - 1} MISSING")
    assert targets_main(["--gpu", str(tmp_path)]) == 0
    assert "CA-ResNet-50" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="GPU run folder not found"):
        gpu_targets(tmp_path / "nope")


def test_the_targets_name_the_shapes_and_layouts_the_benchmarks_time():
    # bench.gpu_targets stays free of torch, so it spells these out; they must agree
    from bench import cases
    from bench.gpu_targets import LAYOUTS, OPS

    assert LAYOUTS == cases.LAYOUTS
    for op in OPS:
        assert SHAPES == tuple(tuple(s) for s in cases.SPECS[op].bench_shapes)
