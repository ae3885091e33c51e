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
    acc = acc_dtype(f.dtype)
    flat = f.dim() == 2
    f4 = f[:, :, None, None] if flat else f
    fa = f4.to(acc)
    channels = f4.shape[1]
    s = fa.mean(dim=(2, 3))  # [N, C] channel scores
    if rank == "hard":
        order = torch.argsort(s, dim=1, stable=True)
        r = torch.argsort(order, dim=1, stable=True).to(acc)
    elif rank == "soft":
        tau = DEFAULT_TAU if tau is None else tau
        sig = torch.sigmoid((s[:, :, None] - s[:, None, :]) / tau)  # [N, C, C]: (s_c - s_j)
        eye = torch.eye(channels, dtype=torch.bool, device=f.device)
        r = torch.where(eye, torch.zeros((), dtype=acc, device=f.device), sig).sum(dim=2)
    else:
        raise ValueError(f"rank must be 'hard' or 'soft', got {rank!r}")
    if not isinstance(b, torch.Tensor):
        b = torch.tensor(float(b), dtype=acc, device=f.device)
    mask = torch.sigmoid((r - channels / 2 + b.reshape(()).to(acc) * channels) / temperature)
    y = torch.relu(fa * mask[:, :, None, None]).to(f.dtype)
    if flat:
        y = y[:, :, 0, 0]
    return (y, mask) if return_mask else y
