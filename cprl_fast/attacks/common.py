"""What every attack shares: argument checks, eval mode, input gradients, the worst-case keep."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from cprl_fast.attacks.losses import mse_loss
from cprl_fast.checks import check_eps

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def check_images(x: torch.Tensor, eps: float) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be images [N, C, H, W], got {getattr(x, 'shape', type(x))}")
    if not x.is_floating_point():
        raise TypeError(f"x must be floating point, got {x.dtype}")
    check_eps(eps)


def check_targets(attack: str, y: torch.Tensor | None, loss: Loss, random_start: bool) -> None:
    """Refuses the one setting in which a gradient attack cannot move: no labels (the targets are
    then the model's own clean scores), the squared error, and the first step from the clean
    image, where that loss and its gradient are exactly 0 whatever the model."""
    if y is None and loss is mse_loss and not random_start:
        raise ValueError(
            f"{attack} needs target scores y (e.g. the images' MOS) for its squared-error loss: "
            "at the model's own clean scores, the default, that loss and its gradient are "
            "exactly 0, so no step would move the images; pass y, or use a random start (pgd) "
            "or score_reflection, which need no labels"
        )


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """The model in eval mode inside, its previous mode (every submodule's) restored after."""
    modes = [m.training for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in zip(model.modules(), modes, strict=True):
            m.training = mode


def targets(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """The scores to move away from: the given labels, else the model's clean predictions."""
    if y is not None:
        if y.shape != (x.shape[0],):
            raise ValueError(f"y must have shape [{x.shape[0]}], got {list(y.shape)}")
        return y.detach().to(x.device, torch.float32)
    with torch.no_grad():
        return model(x).detach().float()


def input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: Loss,
               samples: int = 1) -> torch.Tensor:  # fmt: skip
    """Gradient of ``sum(loss(model(x), y))`` w.r.t. ``x`` only (parameters' ``.grad`` are not
    touched), averaged over ``samples`` forward passes (expectation over transformation)."""
    total = torch.zeros_like(x)
    for _ in range(samples):
        xr = x.detach().requires_grad_(True)
        objective = loss(model(xr).float(), y).sum()
        (g,) = torch.autograd.grad(objective, xr)
        total += g
    return total / samples


def per_sample_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    loss: Loss) -> torch.Tensor:  # fmt: skip
    with torch.no_grad():
        return loss(model(x).float(), y)


def keep_worse(best_x: torch.Tensor, best_loss: torch.Tensor, x: torch.Tensor,
               cur_loss: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Per sample, the candidate with the larger loss (the worst case for the model)."""
    better = cur_loss > best_loss
    best_x = torch.where(better[:, None, None, None], x, best_x)
    return best_x, torch.maximum(best_loss, cur_loss)
