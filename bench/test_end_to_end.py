"""pytest-benchmark of the end-to-end costs (bench/end_to_end.py); CPRL_BENCH_SMALL=1 for CI."""

from __future__ import annotations

import contextlib
import os

import pytest
import torch

from bench.end_to_end import batch, model_fwd_bwd, pgd10
from bench.test_ops import DEVICE
from bench.timing import synchronized
from cprl_fast.models import cprl_resnet, resnet_iqa
from cprl_fast.train import TrainConfig, build_optimizers, make_objective

SMALL = os.environ.get("CPRL_BENCH_SMALL") == "1"
ARCH = "resnet18" if SMALL or DEVICE.type == "cpu" else "resnet50"
SIZE, N = (32, 2) if SMALL else ((128, 16) if DEVICE.type == "cpu" else (320, 16))


@pytest.fixture(scope="module")
def data():
    return batch(SIZE, N, DEVICE)


@pytest.mark.parametrize("name", ["resnet", "cprl"])
def test_model_forward_backward(benchmark, data, name):
    torch.manual_seed(0)
    model = (resnet_iqa if name == "resnet" else cprl_resnet)(ARCH).to(DEVICE).train()
    x, y = data
    benchmark.group = f"model fwd+bwd {ARCH} {SIZE}px x{N}"
    benchmark(synchronized(model_fwd_bwd(model, x, y), DEVICE))
    assert all(p.grad is not None for p in model.head.parameters())


@pytest.mark.parametrize("mode", ["plain", "faithful", "fast"])
def test_training_iteration(benchmark, data, mode):
    torch.manual_seed(0)
    x, y = data
    benchmark.group = f"training iteration {ARCH} {SIZE}px x{N}"
    if mode == "plain":
        model = resnet_iqa(ARCH).to(DEVICE).train()
        groups = make_objective("regression").param_groups(model)
        opt = build_optimizers(groups, TrainConfig(model="resnet"))["theta"]

        def run():
            opt.zero_grad(set_to_none=True)
            torch.mean((model(x) - y) ** 2).backward()
            opt.step()

    else:
        model = cprl_resnet(ARCH).to(DEVICE).train()
        objective = make_objective("pns", {"mode": mode})
        groups = objective.param_groups(model)
        opts, t = build_optimizers(groups, TrainConfig()), [0]

        def run():
            objective.step(model, model, groups, opts, x, y, t[0], None, contextlib.nullcontext())
            t[0] += 1

    before = model.head.weight.detach().clone()
    benchmark(synchronized(run, DEVICE))
    assert not torch.equal(before, model.head.weight)


@pytest.mark.parametrize("step", ["fused", "eager"])
def test_pgd10_throughput(benchmark, data, step):
    torch.manual_seed(0)
    model = resnet_iqa(ARCH).to(DEVICE)
    x, y = data
    benchmark.group = f"PGD-10 {ARCH} {SIZE}px x{N}"
    x_adv = benchmark(synchronized(pgd10(model, x, y, 1 / 255, step == "fused"), DEVICE))
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["images_per_s"] = N / benchmark.stats.stats.median
    assert (x_adv - x).abs().max() <= 1 / 255 + 1e-6
