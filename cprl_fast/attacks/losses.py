"""Per-sample attack objectives (to be maximised): ``loss(scores [N], target [N]) -> [N]``."""

from __future__ import annotations

import torch


def mse_loss(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(h(x') - y)^2`` per sample (Eq. 1-2)."""
    return (scores - target) ** 2


def reflection_loss(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(h(x') - sign(y - 0.5))^2`` per sample (Eq. 5): pushes a high-quality image down and a
    low-quality one up, across 0.5."""
    return (scores - torch.sign(target - 0.5)) ** 2


def soft_ranks(scores: torch.Tensor, tau: float | torch.Tensor) -> torch.Tensor:
    """Differentiable ranks ``r_i = 1/2 + sum_j sigmoid((s_i - s_j) / tau)`` of ``scores [N]``
    (1-based; ``tau -> 0`` gives the average ranks of ties). ``tau``: a number or a 0-d tensor
    on the device of ``scores``."""
    return 0.5 + torch.sigmoid((scores[:, None] - scores[None, :]) / tau).sum(dim=1)


def soft_srcc(scores: torch.Tensor, target: torch.Tensor,
              tau: float | torch.Tensor) -> torch.Tensor:  # fmt: skip
    """Pearson correlation between the soft ranks of ``scores`` and the ranks of ``target``:
    a differentiable surrogate of the batch's SRCC (a 0-d tensor)."""
    r = soft_ranks(scores, tau)
    t = torch.argsort(torch.argsort(target)).to(r.dtype)
    r, t = r - r.mean(), t - t.mean()
    return (r * t).sum() / (r.norm() * t.norm()).clamp_min(1e-12)
