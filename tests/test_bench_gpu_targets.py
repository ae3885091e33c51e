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


def test_the_iteration_targets_name_their_pass_count_floor(tmp_path):
    it = {"faithful_ratio": 2.9, "fast_ratio": 2.1, "floors": {"faithful_floor": 2.54}}
    (tmp_path / "e2e.json").write_text(json.dumps({"train_iteration": it}))
    t = _by_name(gpu_targets(tmp_path, host=tmp_path / "none.json"))
    faithful, fast = t["CPRL iteration / plain, faithful"], t["CPRL iteration / plain, fast"]
    assert faithful.passed is True and faithful.source == "e2e.json (its pass-count floor: 2.54)"
    assert fast.passed is False and fast.source == "e2e.json"  # no floor recorded for it


def test_the_audit_targets_come_from_audit_json_with_their_setting(tmp_path):
    (tmp_path / "e2e.json").write_text(json.dumps({"cprl_over_resnet": 1.02}))
    (tmp_path / "audit.json").write_text(json.dumps(
        {"model": "cprl_resnet50", "size": 224, "images": 32, "seconds": 200.0,
         "over_floor": 1.25}))  # fmt: skip
    t = _by_name(gpu_targets(tmp_path, host=tmp_path / "none.json"))
    over, seconds = t["audit suite time / its floor"], t["audit suite time, 250 images, s"]
    assert over.passed is True and over.value == 1.25
    assert seconds.passed is False and seconds.value == 200.0
    assert seconds.source == "audit.json: cprl_resnet50, 224 px, 32 images timed, scaled to 250"


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
