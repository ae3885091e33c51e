"""Benchmark cases: each op x shape x provider x pass, built from the op specs
(``cprl_fast.ops.SPECS``: inputs, call, reference, shapes, passes and bytes moved).

Providers: ``native`` (cprl_fast's C++/CUDA kernels), ``triton`` (cprl_fast's Triton kernels, CUDA
only), ``eager`` (the plain-PyTorch reference, :mod:`cprl_fast.reference`), ``compile``
(``torch.compile`` of that reference). Passes: ``fwd`` (no autograd), ``bwd`` (backward only,
on a graph built once), ``fwdbwd`` (forward with autograd, then backward). Minimum bytes: the
spec's ``bytes_moved`` per pass times numel * element size (the [N, C] vectors are negligible).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch._dynamo
import torch._functorch.config

import cprl_fast
from cprl_fast.ops import SPECS
from cprl_fast.ops.spec import OpSpec, in_layout

OPS = tuple(SPECS)
#: The memory layouts a benchmark times (the dense ones a network hands an op: NCHW and NHWC).
LAYOUTS = ("contiguous", "channels_last")


def option_values(option: str, text: str, allowed, required: bool = True) -> list[str]:
    """The comma-separated values of a command-line option, each one of ``allowed`` (none at
    all only where not ``required``); else a ValueError naming the option, the value and what
    it takes (one line)."""
    values = [v.strip() for v in text.split(",") if v.strip()]
    for v in values or ([""] if required else []):
        if v not in allowed:
            raise ValueError(f"{option}: {v!r} is not one of {', '.join(allowed)}")
    return values


def small_mode() -> bool:
    return os.environ.get("CPRL_BENCH_SMALL") == "1"


def shapes_for(op: str) -> list[tuple[int, ...]]:
    spec = SPECS[op]
    return list(spec.small_bench_shapes if small_mode() else spec.bench_shapes)


def providers_for(device: torch.device) -> list[str]:
    """The baselines first, so that each kernel's row has its ratios when it is printed."""
    return ["eager", "compile", "native", *(["triton"] if device.type == "cuda" else [])]


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
    layout: str = "contiguous"

    @property
    def name(self) -> str:
        shape = "x".join(map(str, self.shape))
        layout = "" if self.layout == "contiguous" else f"/{self.layout}"
        return f"{self.op}/{self.pass_}/{shape}{layout}/{self.provider}"


@functools.cache
def _compiled(op: str) -> Callable:
    return torch.compile(SPECS[op].reference, dynamic=False)


def function(op: str, provider: str) -> Callable:
    """The implementation a provider times: the public op, the reference, or its compilation."""
    if provider in ("native", "triton"):
        return SPECS[op].public
    if provider == "eager":
        return SPECS[op].reference
    if provider == "compile":
        return _compiled(op)
    raise ValueError(f"unknown provider {provider!r}")


def inputs(op: str, shape, dtype, device, seed: int = 0, layout: str = "contiguous") -> tuple:
    """The spec's sample at a benchmark shape, with its benchmark variant, its 4-D tensors
    stored in ``layout`` (one of :data:`LAYOUTS`)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    spec: OpSpec = SPECS[op]
    return spec.sample(tuple(shape), dtype=dtype, device=device, seed=seed, layout=layout,
                       **spec.bench_variant)  # fmt: skip


def _float64(a):
    return a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a


def call(op: str, fn: Callable, args: tuple):
    outs = SPECS[op].call(fn, args)
    return outs[0] if len(outs) == 1 else outs


def make_case(op: str, shape, provider: str, pass_: str, device: torch.device,
              dtype: torch.dtype = torch.float32, upcast: bool = False,
              layout: str = "contiguous") -> Case:  # fmt: skip
    """Builds the inputs (4-D ones, and the output's gradient, stored in ``layout``) and the
    no-argument callable that one timing repeats. ``upcast``: the same inputs (drawn in
    ``dtype``) converted to float64, for an exact-as-possible result."""
    if provider == "triton" and device.type != "cuda":
        raise ValueError("the triton provider needs a CUDA device")
    backend = provider if provider in ("native", "triton") else "auto"
    if provider == "compile":
        # one compilation per case: the cached reference, recompiled per shape, dtype and grad
        # mode, would reach Dynamo's recompile limit and silently run eager
        torch._dynamo.reset()
    spec = SPECS[op]
    fn = function(op, provider)
    args = inputs(op, shape, dtype, device, layout=layout)
    if upcast:
        args = tuple(_float64(a) for a in args)

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
                return call(op, fn, args)

    else:
        leaves = list(args)
        for i in spec.grad_args:
            leaves[i] = args[i].detach().requires_grad_(True)
        leaves = tuple(leaves)
        wrt = [leaves[i] for i in spec.grad_args]
        g = torch.Generator(device=device).manual_seed(1)
        grad_out = torch.randn(shape, generator=g, dtype=dtype, device=device)
        if grad_out.dim() == 4:  # as the next layer would hand it back
            grad_out = in_layout(grad_out, layout)
        if upcast:
            grad_out = grad_out.double()

        def first(outs):  # the feature-shaped output the gradient enters through
            return outs[0] if isinstance(outs, tuple) else outs

        if pass_ == "bwd":
            # the graph, built once and replayed: a compiled graph must keep the buffers it
            # would otherwise donate to its one backward (retain_graph would be refused)
            with torch._functorch.config.patch(donated_buffer=False):
                out = first(with_backend(lambda: call(op, fn, leaves))())

            def body():
                return torch.autograd.grad(out, wrt, grad_out, retain_graph=True)

        else:

            def body():
                return torch.autograd.grad(first(call(op, fn, leaves)), wrt, grad_out)

    numel = 1
    for s in shape:
        numel *= s
    min_bytes = spec.bytes_moved[pass_] * numel * torch.empty((), dtype=dtype).element_size()
    return Case(op, tuple(shape), provider, pass_, dtype, device, with_backend(body), min_bytes,
                layout)


def groups(device: torch.device, ops_filter: set[str] | None = None,
           passes_filter: set[str] | None = None):  # fmt: skip
    """Every (op, shape, pass) to time on ``device``, in the specs' order, optionally only
    those ops and passes."""
    for op in OPS:
        if ops_filter and op not in ops_filter:
            continue
        for shape in shapes_for(op):
            for pass_ in SPECS[op].passes:
                if not passes_filter or pass_ in passes_filter:
                    yield op, tuple(shape), pass_


def all_cases(device: torch.device, dtype: torch.dtype = torch.float32):
    """Every (op, shape, pass, provider) for ``device``, built lazily one at a time."""
    for op, shape, pass_ in groups(device):
        for provider in providers_for(device):
            yield op, shape, pass_, provider
