"""bench/targets.py in its quick mode: every target gets a row whose verdict follows from its
value and goal (the real numbers come from the full run, committed under bench/results/); and
one pytest-benchmark case per target (CPRL_BENCH_SMALL=1 for CI's small shapes):

1. drop-in cost: ``bench/test_end_to_end.py::test_model_forward_backward`` (resnet, cprl);
2. CPRL training: ``bench/test_end_to_end.py::test_training_iteration`` (plain, faithful, fast);
3. allocator: ``test_rank_mask_training_loop`` (native, eager) below;
4. audit: ``test_audit_suite`` below, and ``bench/test_end_to_end.py::test_pgd10_throughput``.
"""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

from bench.audit_time import suite_passes
from bench.targets import ALLOCATOR_SHAPE, main, training_loop
from cprl_fast import ops, reference

SMALL = os.environ.get("CPRL_BENCH_SMALL") == "1"


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


def test_suite_passes_count_steps_restarts_and_queries():
    # at 2 eps: fgsm 1 + pgd 10 + rank3 3 x 10 gradient steps each, the unbounded check's 10
    # (reflect10); square's 300 queries each, and the clean forward
    assert suite_passes(("fgsm", "pgd", "rank3", "square"), 2) == {"fb": 2 * 41 + 10,
                                                                   "f": 1 + 2 * 300}


@pytest.mark.parametrize("impl", ["native", "eager"])
def test_rank_mask_training_loop(benchmark, impl):
    fn = ops.rank_mask if impl == "native" else reference.rank_mask
    shape = ALLOCATOR_SHAPE[SMALL]
    benchmark.group = f"target 3: rank_mask fwd+bwd training loop {list(shape)}"
    benchmark(training_loop(fn, shape))


def test_audit_suite(benchmark):
    from cprl_fast.audit import SUITE, audit
    from cprl_fast.data import load_splits
    from cprl_fast.models import resnet_iqa

    size, images, eps = (32, 6, (4 / 255,)) if SMALL else (64, 16, (1 / 255, 4 / 255))
    data = load_splits("builtin", None, ("all",), image_size=size)["all"]
    subset = torch.utils.data.Subset(data, range(images))
    torch.manual_seed(0)
    model = resnet_iqa("resnet18").eval()
    benchmark.group = f"target 4: audit suite, {images} images {size}px, {len(eps)} eps"
    report = benchmark.pedantic(audit, args=(model, subset), rounds=1, iterations=1,
                                kwargs={"eps": eps, "attacks": SUITE, "batch_size": 16})
    assert set(report.results[eps[0]]) >= set(SUITE)
