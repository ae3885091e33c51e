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
