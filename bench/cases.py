"""Benchmark cases: each op x shape x provider x pass, with the minimum bytes the op must move.

Providers: ``ours`` (cprl_fast's C++/CUDA kernels), ``triton`` (cprl_fast's Triton kernels, CUDA
only), ``eager`` (the plain-PyTorch reference, :mod:`cprl_fast.reference`), ``compile``
(``torch.compile`` of that reference). Passes: ``fwd`` (no autograd), ``bwd`` (backward only,
on a graph built once), ``fwdbwd`` (forward with autograd, then backward).

Minimum bytes (E = numel * element size): rank_mask fwd 2E (read f, write y), bwd 3E (read f
and dy, write df); intervene fwd 3E (read f, t; write out), bwd 5E (read dy, f, t; write df,
dt); attack_step 4E (read x, grad, x0; write x'). The [N, C] vectors are negligible.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

import cprl_fast
from cprl_fast import ops, reference

#: The CA inputs of ResNet-50 at batch 16 and 320 px, and the attack step on the images.
CA_SHAPES = [(16, 256, 80, 80), (16, 512, 40, 40), (16, 1024, 20, 20), (16, 2048, 10, 10)]
ATTACK_SHAPES = [(16, 3, 320, 320)]
#: Small shapes for the cheap CI mode (CPRL_BENCH_SMALL=1).
SMALL_CA_SHAPES = [(2, 32, 8, 8), (2, 64, 4, 4)]
SMALL_ATTACK_SHAPES = [(2, 3, 16, 16)]

OPS = ("rank_mask", "intervene", "attack_step")
PASSES = {
    "rank_mask": ("fwd", "bwd", "fwdbwd"),
    "intervene": ("fwd", "bwd", "fwdbwd"),
    "attack_step": ("fwd",),
}
BYTES_FACTOR = {
    ("rank_mask", "fwd"): 2, ("rank_mask", "bwd"): 3, ("rank_mask", "fwdbwd"): 5,
    ("intervene", "fwd"): 3, ("intervene", "bwd"): 5, ("intervene", "fwdbwd"): 8,
    ("attack_step", "fwd"): 4,
}  # fmt: skip


def small_mode() -> bool:
    return os.environ.get("CPRL_BENCH_SMALL") == "1"


def shapes_for(op: str) -> list[tuple[int, ...]]:
    if op == "attack_step":
        return SMALL_ATTACK_SHAPES if small_mode() else ATTACK_SHAPES
    return SMALL_CA_SHAPES if small_mode() else CA_SHAPES


def providers_for(device: torch.device) -> list[str]:
    names = ["ours", "eager", "compile"]
    if device.type == "cuda":
        names.insert(1, "triton")
    return names


@dataclass
class Case:
    op: str
    shape: tuple[int, ...]
    provider: str
    pass_: str
    dtype: torch.dtype
    device: torch.device
    fn: Callable[[], object]
    min_bytes: int

    @property
    def name(self) -> str:
        shape = "x".join(map(str, self.shape))
        return f"{self.op}/{self.pass_}/{shape}/{self.provider}"


@functools.cache
def _compiled(op: str) -> Callable:
    return torch.compile(getattr(reference, op), dynamic=False)


def _function(op: str, provider: str) -> Callable:
    if provider in ("ours", "triton"):
        return getattr(ops, op)
    if provider == "eager":
        return getattr(reference, op)
    if provider == "compile":
        return _compiled(op)
    raise ValueError(f"unknown provider {provider!r}")


def _inputs(op: str, shape, dtype, device, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator(device=device).manual_seed(seed)
    if op == "attack_step":
        x0 = torch.rand(shape, generator=g, dtype=dtype, device=device)
        grad = torch.randn(shape, generator=g, dtype=dtype, device=device)
        return [x0.clone(), grad, x0]
    f = torch.randn(shape, generator=g, dtype=dtype, device=device)
    if op == "rank_mask":
        return [f, torch.tensor(0.4, device=device)]
    t = torch.randn(shape, generator=g, dtype=dtype, device=device).relu_()
    mask = torch.rand(shape[:2], generator=g, device=device)
    return [f, t, mask]


def _call(op: str, fn: Callable, args: list[torch.Tensor]):
    if op == "rank_mask":
        return fn(args[0], args[1])
    if op == "intervene":
        return fn(args[0], args[1], args[2], "sf")
    return fn(args[0], args[1], args[2], 1 / 255, 2 / 255)


def make_case(op: str, shape, provider: str, pass_: str, device: torch.device,
              dtype: torch.dtype = torch.float32) -> Case:  # fmt: skip
    """Builds the inputs and the no-argument callable that one timing repeats."""
    if provider == "triton" and device.type != "cuda":
        raise ValueError("the triton provider needs a CUDA device")
    backend = {"ours": "native", "triton": "triton"}.get(provider, "auto")
    fn = _function(op, provider)
    args = _inputs(op, shape, dtype, device)

    def with_backend(body: Callable) -> Callable:
        def run():
            previous = cprl_fast.get_backend()
            cprl_fast.set_backend(backend)
            try:
                return body()
            finally:
                cprl_fast.set_backend(previous)

        return run

    if pass_ == "fwd":

        def body():
            with torch.no_grad():
                return _call(op, fn, args)

    else:
        leaves = [a.detach().requires_grad_(a.is_floating_point()) for a in args]
        g = torch.Generator(device=device).manual_seed(1)
        grad_out = torch.randn(shape, generator=g, dtype=dtype, device=device)
        if pass_ == "bwd":
            out = with_backend(lambda: _call(op, fn, leaves))()  # the graph, built once

            def body():
                return torch.autograd.grad(out, leaves, grad_out, retain_graph=True)

        else:

            def body():
                return torch.autograd.grad(_call(op, fn, leaves), leaves, grad_out)

    numel = 1
    for s in shape:
        numel *= s
    min_bytes = BYTES_FACTOR[(op, pass_)] * numel * torch.empty((), dtype=dtype).element_size()
    return Case(op, tuple(shape), provider, pass_, dtype, device, with_backend(body), min_bytes)


def all_cases(device: torch.device, dtype: torch.dtype = torch.float32):
    """Every (op, shape, pass, provider) for ``device``, built lazily one at a time."""
    for op in OPS:
        for shape in shapes_for(op):
            for pass_ in PASSES[op]:
                for provider in providers_for(device):
                    yield op, shape, pass_, provider
