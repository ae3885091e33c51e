"""``rank_mask``: the CA activation of CPRL (SPEC section 1) as a custom op with autograd.

Schema (declared in ``csrc/ops.cpp``)::

    cprl_fast::rank_mask(Tensor f, Tensor b, float temperature, bool soft, float tau)
        -> (Tensor y, Tensor mask)
    cprl_fast::rank_mask_backward(Tensor grad_y, Tensor? grad_mask, Tensor f, Tensor mask,
        Tensor b, float temperature, bool soft, float tau) -> (Tensor grad_f, Tensor grad_b)

Autograd saves ``f``, ``mask`` and ``b`` (never ``f * mask``), and the backward is its own op,
so ``opcheck`` and ``torch.compile`` see it too.
"""

from __future__ import annotations

import torch

from cprl_fast.ops import _backend
from cprl_fast.ops._checks import acc_dtype, check_rank_mask_args, check_tensor, dense_format

__all__ = ["DEFAULT_TAU", "rank_mask"]

#: Soft-rank temperature used when ``tau`` is None, in the units of the channel scores.
DEFAULT_TAU = 0.1


@torch.library.register_fake("cprl_fast::rank_mask")
def _rank_mask_fake(f, b, temperature, soft, tau):
    check_rank_mask_args(f, b, temperature, soft, tau)
    y = torch.empty_like(f, memory_format=dense_format(f))
    mask = f.new_empty(f.shape[:2], dtype=acc_dtype(f.dtype))
    return y, mask


@torch.library.register_fake("cprl_fast::rank_mask_backward")
def _rank_mask_backward_fake(grad_y, grad_mask, f, mask, b, temperature, soft, tau):
    check_rank_mask_args(f, b, temperature, soft, tau)
    return torch.empty_like(f, memory_format=dense_format(f)), torch.empty_like(b)


def _setup_context(ctx, inputs, output):
    f, b, temperature, soft, tau = inputs
    _, mask = output
    ctx.save_for_backward(f, mask, b)
    ctx.args = (temperature, soft, tau)


def _backward(ctx, grad_y, grad_mask):
    f, mask, b = ctx.saved_tensors
    grad_f, grad_b = _backend.op("rank_mask_backward", f)(grad_y, grad_mask, f, mask, b, *ctx.args)
    return grad_f, grad_b, None, None, None


torch.library.register_autograd("cprl_fast::rank_mask", _backward, setup_context=_setup_context)


def rank_mask(
    f: torch.Tensor,
    b: torch.Tensor | float,
    *,
    temperature: float = 1.0,
    rank: str = "hard",
    tau: float | None = None,
    return_mask: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Channel-activation mask: ``relu(f * M)`` with ``M = sigmoid((rank(s) - C/2 + b*C) / T)``.

    Args:
        f: pre-activation features ``[N, C, H, W]`` (or ``[N, C]``, read as ``H = W = 1``),
            float16/bfloat16/float32/float64, any strides. ``N >= 0``; ``C, H, W >= 1``.
        b: the learnable offset, a one-element tensor on ``f``'s device (or a Python float).
            ``b = 0.5`` keeps every channel; ``b = 0.4`` switches off the ~10% lowest-ranked.
        temperature: ``T > 0`` of the mask's sigmoid (the paper: 1).
        rank: ``"hard"`` (stable ascending rank of the channel means ``s = mean_hw f``, NaN
            last; piecewise constant, so no gradient flows through it) or ``"soft"``
            (``sum_{j != c} sigmoid((s_c - s_j) / tau)``, differentiable through ``s``).
        tau: soft-rank temperature in units of ``s``; ``None`` means :data:`DEFAULT_TAU`.
            Only for ``rank="soft"``.
        return_mask: also return ``M``.

    Returns:
        ``y`` with the shape and dtype of ``f`` (channels_last if ``f`` is), and with
        ``return_mask`` also ``M`` ``[N, C]`` (float64 for float64 ``f``, else float32).
        Gradients flow to ``f`` and ``b`` from both.

    Example::

        >>> f = torch.randn(2, 8, 5, 5, requires_grad=True)
        >>> b = torch.tensor(0.4, requires_grad=True)
        >>> y, m = rank_mask(f, b, return_mask=True)
        >>> y.shape, m.shape
        (torch.Size([2, 8, 5, 5]), torch.Size([2, 8]))
    """
    check_tensor(f, "f")
    if rank not in ("hard", "soft"):
        raise ValueError(f"rank must be 'hard' or 'soft', got {rank!r}")
    if rank == "hard" and tau is not None:
        raise ValueError("tau applies to rank='soft' only; leave it None for rank='hard'")
    soft = rank == "soft"
    tau_value = DEFAULT_TAU if tau is None else float(tau)
    if not isinstance(b, torch.Tensor):
        b = torch.tensor(float(b), dtype=acc_dtype(f.dtype), device=f.device)
    flat = f.dim() == 2
    f4 = f[:, :, None, None] if flat else f
    check_rank_mask_args(f4, b, float(temperature), soft, tau_value)
    y, mask = _backend.op("rank_mask", f4)(f4, b, float(temperature), soft, tau_value)
    if flat:
        y = y[:, :, 0, 0]
    return (y, mask) if return_mask else y
