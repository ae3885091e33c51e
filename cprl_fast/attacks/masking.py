"""Attacks that check a defence for gradient masking.

- :func:`soft_rank`: inside the ``with`` block every CA module ranks with the differentiable
  soft rank, so gradient attacks see through the hard rank's zero gradient; evaluate the
  resulting images on the model outside the block (the real, hard-rank model).
- :func:`square`: the Square attack (Andriushchenko et al. 2020), gradient-free and score-based:
  random square patches of +-eps per channel, kept when they increase the loss.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import nn

from cprl_fast.attacks.common import Loss, check_images, eval_mode, per_sample_loss, targets
from cprl_fast.attacks.gradient import pgd
from cprl_fast.attacks.losses import mse_loss
from cprl_fast.devices import to_device
from cprl_fast.nn import CPRLActivation


@contextlib.contextmanager
def soft_rank(model: nn.Module, tau: float = 0.1) -> Iterator[nn.Module]:
    """Every :class:`CPRLActivation` of ``model`` uses ``rank="soft"`` with ``tau`` inside."""
    modules = [m for m in model.modules() if isinstance(m, CPRLActivation)]
    if not modules:
        raise ValueError("the model has no CPRLActivation module to give a soft rank")
    saved = [(m.rank, m.tau) for m in modules]
    try:
        for m in modules:
            m.rank, m.tau = "soft", tau
        yield model
    finally:
        for m, (rank, t) in zip(modules, saved, strict=True):
            m.rank, m.tau = rank, t


def pgd_soft_rank(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, eps: float = 1 / 255,
    steps: int = 10, generator: torch.Generator | None = None, tau: float = 0.1,
) -> torch.Tensor:  # fmt: skip
    """PGD whose gradients come through the soft-rank surrogate of the model's CA modules
    (BPDA): the images it returns are then scored by the real, hard-rank model. A CA model
    only (ValueError otherwise)."""
    with soft_rank(model, tau):
        return pgd(model, x, y, eps, steps=steps, generator=generator)


#: Queries whose random numbers :func:`square` draws and copies to the device at once.
SQUARE_DRAW_QUERIES = 256


def _square_fraction(p_init: float, i: int, n: int) -> float:
    """The schedule of the square's area fraction (halved at fixed fractions of the budget)."""
    it = int(i / n * 10000)
    for bound, div in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64),
                       (6000, 128), (8000, 256)):  # fmt: skip
        if it <= bound:
            return p_init / div
    return p_init / 512


def square(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, eps: float = 1 / 255,
    queries: int = 300, p_init: float = 0.1, loss: Loss = mse_loss,
    generator: torch.Generator | None = None, lo: float = 0.0, hi: float = 1.0,
) -> torch.Tensor:  # fmt: skip
    """L-infinity Square attack with ``queries`` model evaluations per sample.

    The random numbers come from ``generator`` (a CPU one, or the CPU's default) in a fixed
    order: the initial stripes, then per query the squares' rows, columns and signs. They are
    drawn on the CPU :data:`SQUARE_DRAW_QUERIES` queries at a time and copied to ``x``'s
    device in one transfer that the host does not wait for (:func:`cprl_fast.devices.to_device`);
    the draws, and so the result, do not depend on that number."""
    check_images(x, eps)
    x0 = x.detach()
    n, c, h, w = x0.shape
    dev = x0.device

    def rand(*shape):
        return to_device(torch.rand(*shape, generator=generator, device="cpu"), dev)

    def query_draws() -> Iterator[torch.Tensor]:
        """Per query ``[n * (2 + c)]``: ``n`` rows, ``n`` columns, ``n * c`` signs in [0, 1)."""
        for start in range(1, queries, SQUARE_DRAW_QUERIES):
            yield from rand(min(SQUARE_DRAW_QUERIES, queries - start), n * (2 + c))

    with eval_mode(model):
        y_t = targets(model, x0, y)
        stripes = (rand(n, c, 1, w) < 0.5).to(x0.dtype) * 2 - 1
        best = (x0 + eps * stripes).clamp(lo, hi)
        best_loss = per_sample_loss(model, best, y_t, loss)
        rows = torch.arange(h, device=dev)[None, :, None]
        cols = torch.arange(w, device=dev)[None, None, :]
        for i, u in enumerate(query_draws(), start=1):
            area = _square_fraction(p_init, i, queries) * h * w
            side = max(1, min(h, w, round(math.sqrt(area))))
            top = (u[:n] * (h - side + 1)).long()
            left = (u[n : 2 * n] * (w - side + 1)).long()
            t, lft = top[:, None, None], left[:, None, None]
            inside = (rows >= t) & (rows < t + side) & (cols >= lft) & (cols < lft + side)
            signs = (u[2 * n :].view(n, c, 1, 1) < 0.5).to(x0.dtype) * 2 - 1
            cand = torch.where(inside[:, None], x0 + eps * signs, best).clamp(lo, hi)
            cand = torch.minimum(torch.maximum(cand, x0 - eps), x0 + eps)
            cand_loss = per_sample_loss(model, cand, y_t, loss)
            better = cand_loss > best_loss
            best = torch.where(better[:, None, None, None], cand, best)
            best_loss = torch.where(better, cand_loss, best_loss)
    return best
