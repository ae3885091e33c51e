"""Helpers shared by the op tests: the input generators and tolerances of the op specs
(:mod:`cprl_fast.ops.spec`), and gradients of a call."""

from __future__ import annotations

import torch

from cprl_fast.ops.spec import LAYOUTS, TOLERANCES, feature, in_layout, like, seed_of

__all__ = ["LAYOUTS", "TOLERANCES", "feature", "grads", "in_layout", "like", "seed_of", "tol"]


def tol(dtype: torch.dtype) -> dict:
    return TOLERANCES[dtype]


def grads(fn, inputs: list[torch.Tensor], grad_outputs):
    """Gradients of ``fn(*inputs)`` w.r.t. inputs, for the given output gradients."""
    leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
    out = fn(*leaves)
    outs = out if isinstance(out, tuple) else (out,)
    torch.autograd.backward(outs, grad_outputs)
    return out, [leaf.grad for leaf in leaves]
