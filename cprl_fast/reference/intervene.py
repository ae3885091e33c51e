"""Reference of :func:`cprl_fast.ops.intervene`, written from docs/maths.md §2."""

from __future__ import annotations

import torch

from cprl_fast.checks import acc_dtype


def intervene(f: torch.Tensor, t: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """``relu(t*(1-M) + f*M)`` for ``"sf"``, ``relu(t*M + f*(1-M))`` for ``"nc"``."""
    acc = acc_dtype(f.dtype)
    m = mask.to(acc)
    m = m if f.dim() == 2 else m[:, :, None, None]
    fa, ta = f.to(acc), t.to(acc)
    if mode == "sf":
        c = ta * (1 - m) + fa * m
    elif mode == "nc":
        c = ta * m + fa * (1 - m)
    else:
        raise ValueError(f"mode must be 'sf' or 'nc', got {mode!r}")
    return torch.relu(c).to(f.dtype)


def intervene_vjp(grad: torch.Tensor, f: torch.Tensor, t: torch.Tensor, mask: torch.Tensor,
                  mode: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """The gradients ``(grad_f, grad_t, grad_mask)`` of :func:`intervene` (``f``, ``t`` ``[N, C,
    H, W]``, ``mask`` ``[N, C]``) for the output gradient ``grad``, written out in
    differentiable PyTorch ops: what autograd computes through :func:`intervene`, in a form
    whose own gradient is the second order, and that ``torch.func`` transforms. Each gradient
    has its input's dtype.

    With ``c = t * w_t + f * w_f`` (``w_f = M``, ``w_t = 1 - M`` for ``"sf"``; the other way
    round for ``"nc"``) and the gate ``g = grad`` where ``c`` is not ``<= 0`` (else 0):
    ``df = g * w_f``, ``dt = g * w_t``, ``dM = +-sum_hw g * (f - t)`` (``+`` for ``"sf"``)."""
    acc = acc_dtype(f.dtype)
    m = mask.to(acc)[:, :, None, None]
    fa, ta = f.to(acc), t.to(acc)
    if mode == "sf":
        w_f, w_t, sign = m, 1 - m, 1.0
    elif mode == "nc":
        w_f, w_t, sign = 1 - m, m, -1.0
    else:
        raise ValueError(f"mode must be 'sf' or 'nc', got {mode!r}")
    gate = torch.where(ta * w_t + fa * w_f <= 0, 0.0, grad.to(acc))  # relu's: NaN passes
    grad_mask = sign * (gate * (fa - ta)).sum(dim=(2, 3))
    return (gate * w_f).to(f.dtype), (gate * w_t).to(t.dtype), grad_mask.to(mask.dtype)
