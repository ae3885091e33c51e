"""``intervene``: the masked intervention combine of CPRL (SPEC section 2) as a custom op.

Schema (declared in ``csrc/ops.cpp``)::

    cprl_fast::intervene(Tensor f, Tensor t, Tensor mask, str mode) -> Tensor
    cprl_fast::intervene_backward(Tensor grad, Tensor f, Tensor t, Tensor mask, str mode)
        -> (Tensor grad_f, Tensor grad_t, Tensor grad_mask)

Autograd saves the inputs only; the backward recomputes the ReLU gate in the same pass that
writes ``grad_f`` and ``grad_t`` and reduces ``grad_mask``.
"""

from __future__ import annotations

import torch

from cprl_fast.ops import _backend
from cprl_fast.ops._checks import check_intervene_args, check_tensor, dense_format

__all__ = ["intervene"]


@torch.library.register_fake("cprl_fast::intervene")
def _intervene_fake(f, t, mask, mode):
    check_intervene_args(f, t, mask, mode)
    return torch.empty_like(f, memory_format=dense_format(f))


@torch.library.register_fake("cprl_fast::intervene_backward")
def _intervene_backward_fake(grad, f, t, mask, mode):
    check_intervene_args(f, t, mask, mode)
    fmt = dense_format(f)
    return (
        torch.empty_like(f, memory_format=fmt),
        torch.empty_like(f, memory_format=fmt),
        torch.empty_like(mask, memory_format=torch.contiguous_format),
    )


def _setup_context(ctx, inputs, output):
    f, t, mask, mode = inputs
    ctx.save_for_backward(f, t, mask)
    ctx.mode = mode


def _backward(ctx, grad):
    f, t, mask = ctx.saved_tensors
    grad_f, grad_t, grad_mask = _backend.op("intervene_backward", f)(grad, f, t, mask, ctx.mode)
    return grad_f, grad_t, grad_mask, None


torch.library.register_autograd("cprl_fast::intervene", _backward, setup_context=_setup_context)


def intervene(f: torch.Tensor, t: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Intervened CA output: ``relu(c)`` (``mode="sf"``) or ``relu(s)`` (``mode="nc"``).

    ``c = t * (1 - M) + f * M`` keeps the masked-in (perceptual) part of ``f`` and replaces the
    rest by ``t``; ``s = t * M + f * (1 - M)`` keeps the masked-out part and replaces the
    perceptual part.

    Args:
        f: factual features ``[N, C, H, W]`` (or ``[N, C]``), float16/bfloat16/float32/float64.
        t: intervened features (the output of ``FC_phi`` or ``FC_xi``), same shape, dtype and
            device as ``f``.
        mask: ``M`` ``[N, C]``, any floating dtype (computed in float32, float64 for float64
            ``f``), e.g. the mask returned by :func:`rank_mask`.
        mode: ``"sf"`` (sufficiency, phi) or ``"nc"`` (necessity, xi).

    Returns:
        A tensor with the shape and dtype of ``f``; gradients flow to ``f``, ``t`` and ``mask``.

    Example::

        >>> f, t = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
        >>> out = intervene(f, t, torch.rand(2, 4), "sf")
        >>> out.shape
        torch.Size([2, 4, 3, 3])
    """
    check_tensor(f, "f")
    check_tensor(t, "t")
    flat = f.dim() == 2
    if flat:
        f, t = f[:, :, None, None], t[:, :, None, None]
    check_intervene_args(f, t, mask, mode)
    out = _backend.op("intervene", f)(f, t, mask, mode)
    return out[:, :, 0, 0] if flat else out
