"""FGSM, PGD, the score-reflection attack and the rank-order attack, every update through
``ops.attack_step``."""

from __future__ import annotations

import torch
from torch import nn

from cprl_fast import ops
from cprl_fast.attacks.common import (
    Loss,
    check_images,
    check_targets,
    eval_mode,
    input_grad,
    keep_worse,
    per_sample_loss,
    targets,
)
from cprl_fast.attacks.losses import mse_loss, reflection_loss, soft_srcc


def fgsm(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, eps: float = 1 / 255,
    loss: Loss = mse_loss, lo: float = 0.0, hi: float = 1.0, eot: int = 1,
) -> torch.Tensor:  # fmt: skip
    """``x' = clip(x + eps * sign(grad_x loss))`` (Eq. 1).

    Args:
        model: images ``[N, 3, H, W]`` in [lo, hi] -> scores ``[N]``.
        x: clean images. y: target scores ``[N]``, e.g. the MOS labels (default: the model's
            clean predictions; required with the default loss, whose gradient there is 0).
        eps: L-infinity budget in pixel units (1/255 = one grey level).
        loss: per-sample objective to ascend (default ``(h(x') - y)^2``).
        eot: gradients averaged over this many passes (for stochastic models).
    """
    check_targets("fgsm", y, loss, random_start=False)
    return pgd(model, x, y, eps=eps, alpha=eps, steps=1, random_start=False, loss=loss, lo=lo,
               hi=hi, eot=eot)  # fmt: skip


def pgd(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, eps: float = 1 / 255,
    alpha: float | None = None, steps: int = 10, random_start: bool = True, restarts: int = 1,
    loss: Loss = mse_loss, generator: torch.Generator | None = None, lo: float = 0.0,
    hi: float = 1.0, eot: int = 1,
) -> torch.Tensor:  # fmt: skip
    """Projected gradient ascent (Madry et al.): ``steps`` steps of size ``alpha`` (default
    ``eps / 4``) inside the L-infinity ball, from a random start drawn from ``generator``;
    with ``restarts > 1`` the worst case per sample over the restarts is kept. ``y``: target
    scores ``[N]`` (default: the model's clean predictions; required with the default loss and
    no random start, whose first gradient would be 0)."""
    check_images(x, eps)
    check_targets("pgd", y, loss, random_start)
    if steps < 1 or restarts < 1 or eot < 1:
        raise ValueError(f"steps, restarts and eot must be >= 1, got {steps}, {restarts}, {eot}")
    alpha = eps / 4 if alpha is None else alpha
    x0 = x.detach()
    with eval_mode(model):
        y_t = targets(model, x0, y)
        best_x, best_loss = x0.clone(), per_sample_loss(model, x0, y_t, loss)
        for _ in range(restarts):
            xi = (
                ops.random_start(x0, eps, lo, hi, generator=generator)
                if random_start
                else x0.clone()
            )
            for _ in range(steps):
                g = input_grad(model, xi, y_t, loss, eot)
                ops.attack_step_(xi, g, x0, alpha, eps, lo, hi)
            best_x, best_loss = keep_worse(
                best_x, best_loss, xi, per_sample_loss(model, xi, y_t, loss)
            )
    return best_x


def score_reflection(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, eps: float = 1 / 255,
    steps: int = 1, alpha: float | None = None, generator: torch.Generator | None = None,
    lo: float = 0.0, hi: float = 1.0, eot: int = 1,
) -> torch.Tensor:  # fmt: skip
    """The score-reflection attack (Eq. 5): ascend ``(h(x') - sign(y - 0.5))^2``, pushing a
    high-quality image's score down and a low-quality one's up. ``steps=1`` is the one-step
    form (an FGSM step); more steps run PGD without a random start."""
    if steps == 1:
        return fgsm(model, x, y, eps, reflection_loss, lo, hi, eot)
    return pgd(model, x, y, eps, alpha, steps, random_start=False, loss=reflection_loss,
               generator=generator, lo=lo, hi=hi, eot=eot)  # fmt: skip


def rank_pgd(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, eps: float = 1 / 255,
    steps: int = 10, alpha: float | None = None, restarts: int = 1,
    generator: torch.Generator | None = None, lo: float = 0.0, hi: float = 1.0,
) -> torch.Tensor:  # fmt: skip
    """The rank-order attack: PGD on the whole batch at once, descending a differentiable SRCC
    between the batch's scores and its labels (soft ranks by pairwise sigmoids,
    :func:`~cprl_fast.attacks.losses.soft_srcc`, temperature a tenth of the clean scores'
    standard deviation), from a random start; with ``restarts > 1`` the restart whose batch has
    the lowest (hard) SRCC is kept. It attacks what SRCC measures, the order, where the
    per-image objectives push scores to the ends of the scale. Batches of fewer than 3 images
    have no order to attack: they get the score-reflection attack instead."""
    check_images(x, eps)
    if steps < 1 or restarts < 1:
        raise ValueError(f"steps and restarts must be >= 1, got {steps}, {restarts}")
    if x.shape[0] < 3:
        return score_reflection(model, x, y, eps, steps, alpha, generator, lo, hi)
    alpha = eps / 4 if alpha is None else alpha
    x0 = x.detach()
    with eval_mode(model):
        y_t = targets(model, x0, y)
        # tau, the batch SRCCs and the choice of restart stay on the device: nothing is read
        # back to the host (on a GPU each read would wait for every pass queued before it)
        with torch.no_grad():
            tau = (model(x0).float().std() / 10).clamp_min(1e-4)

        def batch_srcc(xi: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return soft_srcc(model(xi).float(), y_t, 1e-6)

        best_x, best = x0.clone(), batch_srcc(x0)
        for _ in range(restarts):
            xi = ops.random_start(x0, eps, lo, hi, generator=generator)
            for _ in range(steps):
                xr = xi.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(-soft_srcc(model(xr).float(), y_t, tau), xr)
                ops.attack_step_(xi, g, x0, alpha, eps, lo, hi)
            value = batch_srcc(xi)
            best_x = torch.where(value < best, xi, best_x)
            best = torch.minimum(value, best)
    return best_x
