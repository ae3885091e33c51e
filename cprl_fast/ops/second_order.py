"""Second-order gradients of the ops: autograd for their backward ops, from the references.

A plain backward runs the fused backward op (``csrc/autograd.cpp`` calls it below the autograd
keys; the Triton autograd of :mod:`cprl_fast.ops._backend` calls its twin). Under
``create_graph`` (double backpropagation: an input-gradient penalty such as the ``nt``
objective's, a gradient-norm regulariser in a user's own network) that call goes through the
backward op's autograd, registered here for the native op and its Triton twin alike. Its
gradient is the vector-Jacobian product of the reference's own first-order gradient
(``torch.func.vjp`` over :mod:`cprl_fast.reference`), so a second-order gradient is the
reference's, computed by plain PyTorch ops rather than a fused kernel. Without it autograd's
fallback warned and returned zeros.

Each backward op's first-order function is written in its op module and registered with
:func:`register`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch

from cprl_fast.ops import _backend


def vjp(forward: Callable, primals: Sequence[torch.Tensor],
        cotangents: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:  # fmt: skip
    """The gradients of ``forward(*primals)`` (one tensor, or a tuple of two or more) with
    respect to ``primals`` for the output gradients ``cotangents`` (one per output, shaped like
    it), by ``torch.func.vjp``: differentiable again, in the primals and the cotangents alike."""
    _, pull = torch.func.vjp(forward, *primals)
    return pull(cotangents[0] if len(cotangents) == 1 else tuple(cotangents))


def register(backward_op: str, first_order: Callable, differentiable: Sequence[int],
             grads_like: Sequence[int]) -> None:  # fmt: skip
    """Registers the autograd of ``torch.ops.cprl_fast.<backward_op>`` (now) and of its Triton
    twin (when the Triton kernels load).

    Args:
        backward_op: the backward op's name, e.g. ``"rank_mask_backward"``.
        first_order: ``first_order(*inputs) -> outputs``: the backward op's outputs computed
            from the reference (with :func:`vjp`) on the op's own inputs, differentiable in the
            inputs at ``differentiable``. An optional input that is None stays None.
        differentiable: the positions of the inputs a gradient flows to; every other input
            gets None, and ``first_order`` gets None for every other tensor input (one the
            reference recomputes, such as ``rank_mask``'s mask, whose dependence on ``f`` and
            ``b`` the recomputation carries).
        grads_like: for each output, the position of the input it has the shape of (the zeros
            that stand for an output nothing used).
    """
    setup = functools.partial(_setup, differentiable=tuple(differentiable))
    backward = functools.partial(_backward, first_order=first_order, grads_like=tuple(grads_like))
    torch.library.register_autograd(f"cprl_fast::{backward_op}", backward, setup_context=setup)
    _backend.register_autograd(backward_op, _ignore_backend(setup), _ignore_backend(backward))


def _ignore_backend(fn: Callable) -> Callable:
    """``fn`` for :func:`cprl_fast.ops._backend.register_autograd`, which passes ``backend``:
    second-order gradients come from the reference whatever ran the first order."""

    def call(*args, backend: str, **kwargs):
        return fn(*args, **kwargs)

    return call


def _setup(ctx, inputs, output, *, differentiable: tuple[int, ...]) -> None:
    ctx.positions = [i for i in differentiable if inputs[i] is not None]
    ctx.save_for_backward(*(inputs[i] for i in ctx.positions))
    # the settings; a tensor input with no gradient is the reference's to recompute: not kept
    ctx.inputs = [None if i in differentiable or isinstance(x, torch.Tensor) else x
                  for i, x in enumerate(inputs)]  # fmt: skip


def _backward(ctx, *grads, first_order: Callable, grads_like: tuple[int, ...]) -> tuple:
    inputs = list(ctx.inputs)
    for i, x in zip(ctx.positions, ctx.saved_tensors, strict=True):
        inputs[i] = x
    cotangents = [torch.zeros_like(inputs[j]) if g is None else g
                  for g, j in zip(grads, grads_like, strict=True)]  # fmt: skip

    def outputs(*primals):
        args = list(inputs)
        for i, x in zip(ctx.positions, primals, strict=True):
            args[i] = x
        return first_order(*args)

    found = vjp(outputs, [inputs[i] for i in ctx.positions], cotangents)
    result: list[torch.Tensor | None] = [None] * len(inputs)
    for i, g in zip(ctx.positions, found, strict=True):
        result[i] = g
    return tuple(result)
