"""Reference of :func:`cprl_fast.ops.attack_step`, written from docs/maths.md §5."""

from __future__ import annotations

import torch

from cprl_fast.checks import acc_dtype


def attack_step(
    x: torch.Tensor,
    grad: torch.Tensor,
    x0: torch.Tensor,
    alpha: float,
    eps: float,
    lo: float = 0.0,
    hi: float = 1.0,
) -> torch.Tensor:
    """``min(max(min(max(x + alpha*sign(g), x0 - eps), x0 + eps), lo), hi)``."""
    acc = acc_dtype(x.dtype)
    with torch.no_grad():
        x0a = x0.to(acc)
        v = x.to(acc) + alpha * torch.sign(grad.to(acc))
        v = torch.minimum(torch.maximum(v, x0a - eps), x0a + eps)
        return torch.clamp(v, lo, hi).to(x.dtype)
