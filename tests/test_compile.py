"""The ops trace into one graph under torch.compile(fullgraph=True) and give the eager result."""

from __future__ import annotations

import pytest
import torch
from op_testing import feature, like

from cprl_fast import ops


def ca_block(f, t, b, x, g):
    """A CA layer in SF mode followed by an attack step: all three ops in one graph."""
    y, m = ops.rank_mask(f, b, return_mask=True)
    c = ops.intervene(f, t, m, "sf")
    x1 = ops.attack_step(x, g, x, 1 / 255, 2 / 255)
    return (y * c).sum(), x1


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_compiled_matches_eager(device_backend, layout):
    device, backend = device_backend
    if backend == "triton" and device.type == "cpu":
        pytest.skip("triton_op fails fake-tensor tracing under the interpreter (GPU runs it)")
    torch._dynamo.reset()
    f = feature((2, 8, 5, 4), device=device, seed=1, layout=layout)
    t = like(f, 2).relu()
    x = torch.rand(2, 3, 8, 8, device=device)
    g = torch.randn_like(x)
    b0 = torch.tensor(0.4, device=device)

    def run(fn):
        fl = f.clone().requires_grad_(True)
        bl = b0.clone().requires_grad_(True)
        loss, x1 = fn(fl, t, bl, x, g)
        loss.backward()
        return loss.detach(), x1, fl.grad, bl.grad

    eager = run(ca_block)
    compiled = run(torch.compile(ca_block, fullgraph=True, dynamic=False))
    for a, b in zip(eager, compiled, strict=False):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("choice", ["auto", "native", "triton"])
def test_cuda_dispatch_decision_traces_in_one_graph(choice):
    """The backend decision and the kernel lookup for a CUDA tensor read only Python constants,
    so a compiled model does not break its graph (or fail under fullgraph=True) at every op
    call; no GPU is needed to trace them. (The first GPU run found the Triton lookup loading the
    kernels inside the trace: Dynamo refused its register_autograd.)"""
    from cprl_fast.ops import _backend

    cuda = torch.device("cuda")
    previous = _backend.get_backend()
    _backend.set_backend(choice)
    try:
        try:
            expected = _backend.resolve(cuda).name
        except RuntimeError:
            pytest.skip(f"backend {choice!r} cannot serve CUDA tensors in this build")

        def fn(x):
            backend, op = _backend.kernel("rank_mask", cuda)
            return x + (1.0 if backend.name == "native" else 2.0) + (op is not None)

        torch._dynamo.reset()
        out = torch.compile(fn, fullgraph=True, backend="eager")(torch.zeros(3))
    finally:
        _backend.set_backend(previous)
    assert torch.equal(out, torch.full((3,), 2.0 if expected == "native" else 3.0))


@pytest.mark.parametrize("choice", ["auto", "native", "triton"])
def test_op_for_traces_in_one_graph_and_follows_the_choice(choice, monkeypatch):
    """op_for, what a CA layer calls on every forward, remembers the overload per (op, device)
    and forgets it when the backend changes; traced with a cold memory it mutates a global
    dictionary, which Dynamo must replay without breaking the graph."""
    from cprl_fast.ops import _backend

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    previous = _backend.get_backend()
    _backend.set_backend(choice)
    try:
        for device in (cpu, cuda):
            try:
                expected = _backend.kernel("rank_mask", device)[1]
            except RuntimeError:
                continue
            assert _backend.op_for("rank_mask", device) is expected
        _backend.set_backend(choice)  # empties the memory
        try:
            expected = _backend.kernel("rank_mask", cuda)[1]
        except RuntimeError:
            pytest.skip(f"backend {choice!r} cannot serve CUDA tensors in this build")

        def fn(x):
            return x + (_backend.op_for("rank_mask", cuda) is expected)

        torch._dynamo.reset()
        out = torch.compile(fn, fullgraph=True, backend="eager")(torch.zeros(3))
        assert torch.equal(out, torch.ones(3))
        if choice == "triton" and _backend.HAS_TRITON:  # never remembered: TRITON_INTERPRET
            monkeypatch.setenv("TRITON_INTERPRET", "1")
            assert _backend.op_for("rank_mask", cpu) is _backend.kernel("rank_mask", cpu)[1]
            monkeypatch.delenv("TRITON_INTERPRET")
            assert _backend.op_for("rank_mask", cpu) is torch.ops.cprl_fast.rank_mask.default
    finally:
        _backend.set_backend(previous)


def test_ca_layer_compiles_in_one_graph():
    # the normal mode calls cprl_fast._C.ca_activation (a C function): dynamo traces the
    # torch.ops op in its place (torch.compiler.substitute_in_graph in ops/_backend.py)
    from cprl_fast import CPRLActivation

    torch._dynamo.reset()
    torch.manual_seed(0)
    layer = CPRLActivation(8)
    compiled = torch.compile(layer, fullgraph=True, dynamic=False)
    f = feature((2, 8, 5, 4), seed=3)
    results = []
    for fn in (layer, compiled):
        fl = f.clone().requires_grad_(True)
        y = fn(fl)
        y.square().sum().backward()
        results.append((y.detach(), fl.grad, layer.b.grad.clone()))
        layer.b.grad = None
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b)
