"""Reference of :func:`cprl_fast.ops.rank_mask`, written from docs/maths.md §1 line by line."""

from __future__ import annotations

import torch

from cprl_fast.checks import acc_dtype

#: Soft-rank temperature used when ``tau`` is None, in the units of the channel scores.
DEFAULT_TAU = 0.1


def rank_mask(
    f: torch.Tensor,
    b: torch.Tensor | float,
    *,
    temperature: float = 1.0,
    rank: str = "hard",
    tau: float | None = None,
    return_mask: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``M = sigmoid((r - C/2 + b*C) / T)``: see :func:`cprl_fast.ops.rank_mask`."""
    flat = f.dim() == 2
    f4 = f[:, :, None, None] if flat else f
    fa = f4.to(acc_dtype(f.dtype))
    mask, _ = _mask(fa, b, temperature, rank, tau)
    y = torch.relu(fa * mask[:, :, None, None]).to(f.dtype)
    if flat:
        y = y[:, :, 0, 0]
    return (y, mask) if return_mask else y


def _mask(fa: torch.Tensor, b: torch.Tensor | float, temperature: float, rank: str,
          tau: float | None) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """``M`` ``[N, C]`` of the features ``fa`` (``[N, C, H, W]`` in the accumulation dtype),
    and for the soft rank the pairwise sigmoids ``sigmoid((s_c - s_j) / tau)`` ``[N, C, C]``
    (their diagonal zeroed)."""
    acc, channels = fa.dtype, fa.shape[1]
    s = fa.mean(dim=(2, 3))  # [N, C] channel scores
    sig = None
    if rank == "hard":
        order = torch.argsort(s, dim=1, stable=True)
        r = torch.argsort(order, dim=1, stable=True).to(acc)
    elif rank == "soft":
        tau = DEFAULT_TAU if tau is None else tau
        sig = torch.sigmoid((s[:, :, None] - s[:, None, :]) / tau)  # [N, C, C]: (s_c - s_j)
        eye = torch.eye(channels, dtype=torch.bool, device=fa.device)
        sig = torch.where(eye, torch.zeros((), dtype=acc, device=fa.device), sig)
        r = sig.sum(dim=2)
    else:
        raise ValueError(f"rank must be 'hard' or 'soft', got {rank!r}")
    if not isinstance(b, torch.Tensor):
        b = torch.tensor(float(b), dtype=acc, device=fa.device)
    mask = torch.sigmoid((r - channels / 2 + b.reshape(()).to(acc) * channels) / temperature)
    return mask, sig


def rank_mask_vjp(grad_y: torch.Tensor, grad_mask: torch.Tensor | None, f: torch.Tensor,
                  b: torch.Tensor, temperature: float, soft: bool,
                  tau: float) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """The gradients ``(grad_f, grad_b)`` of :func:`rank_mask` at ``(f [N, C, H, W], b)`` for
    the output gradients ``grad_y`` and ``grad_mask`` (``[N, C]``, or None for none), written
    out in differentiable PyTorch ops (docs/maths.md §1), the mask recomputed from ``f`` and
    ``b``: what autograd computes through :func:`rank_mask`, in a form whose own gradient is
    the second order, and that ``torch.func`` transforms. ``grad_f`` has ``f``'s dtype, and
    ``grad_b`` ``b``'s dtype and shape.

    ``y = relu(f * M)``, ``M = sigmoid(z)``, ``z = (r - C/2 + b*C) / T``. The gate ``g = dy``
    where ``y`` is not ``<= 0`` (else 0) gives ``df = g * M`` and ``dM = sum_hw g * f +
    grad_mask``; then ``dz = dM * M * (1 - M)``, ``db = C / T * sum dz``, ``dr = dz / T``. The
    hard rank passes nothing back; the soft rank ``r_c = sum_{j != c} sigmoid((s_c - s_j) /
    tau)`` gives ``ds_c = sum_{j != c} sigma'_cj (dr_c - dr_j) / tau`` and ``df += ds / (H *
    W)``."""
    fa = f.to(acc_dtype(f.dtype))
    channels, pixels = fa.shape[1], fa.shape[2] * fa.shape[3]
    mask, sig = _mask(fa, b, temperature, "soft" if soft else "hard", tau)
    m = mask[:, :, None, None]
    gate = torch.where(fa * m <= 0, 0.0, grad_y.to(fa.dtype))  # relu's: NaN passes, as autograd
    grad_f = gate * m
    grad_m = (gate * fa).sum(dim=(2, 3))
    if grad_mask is not None:
        grad_m = grad_m + grad_mask.to(fa.dtype)
    grad_z = grad_m * mask * (1 - mask) / temperature
    grad_b = (grad_z.sum() * channels).to(b.dtype).reshape(b.shape)
    if sig is not None:  # sigma' on the diagonal is 0: sig is zeroed there
        slope = sig * (1 - sig) / tau
        grad_s = (slope * (grad_z[:, :, None] - grad_z[:, None, :])).sum(dim=2)
        grad_f = grad_f + grad_s[:, :, None, None] / pixels
    return grad_f.to(f.dtype), grad_b
