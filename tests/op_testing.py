"""Helpers shared by the op tests: the input generators and tolerances of the op specs
(:mod:`cprl_fast.ops.spec`), and gradients of a call."""

from __future__ import annotations

import torch

from cprl_fast.ops.spec import LAYOUTS, TOLERANCES, feature, in_layout, like, seed_of

__all__ = ["LAYOUTS", "TOLERANCES", "feature", "gradcheck_shape", "grads", "in_layout", "like",
           "seed_of", "tol"]

#: The float64 gradcheck shape under Triton's interpreter: each of gradcheck's ``2 x numel``
#: calls takes a good part of a second there, so the interpreter checks 32 elements (2 images,
#: 4 channels, 2 x 2 pixels; the GPU checks the full shapes in hardware).
INTERPRETED_GRADCHECK_SHAPE = (2, 4, 2, 2)


def gradcheck_shape(device: torch.device, shape: tuple[int, ...]) -> tuple[int, ...]:
    """``shape``, or :data:`INTERPRETED_GRADCHECK_SHAPE` where the Triton backend runs in its
    interpreter (CPU tensors with the ``triton`` backend selected)."""
    import cprl_fast

    interpreted = device.type == "cpu" and cprl_fast.get_backend() == "triton"
    return INTERPRETED_GRADCHECK_SHAPE if interpreted else shape


def tol(dtype: torch.dtype) -> dict:
    return TOLERANCES[dtype]


def grads(fn, inputs: list[torch.Tensor], grad_outputs):
    """Gradients of ``fn(*inputs)`` w.r.t. inputs, for the given output gradients."""
    leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
    out = fn(*leaves)
    outs = out if isinstance(out, tuple) else (out,)
    torch.autograd.backward(outs, grad_outputs)
    return out, [leaf.grad for leaf in leaves]
