"""``attack_step``: the fused gradient-sign step of FGSM/PGD (SPEC section 5).

Schema (declared in ``csrc/ops.cpp``)::

    cprl_fast::attack_step(Tensor x, Tensor grad, Tensor x0, float alpha, float eps,
        float lo, float hi) -> Tensor
    cprl_fast::attack_step_out(Tensor x, Tensor grad, Tensor x0, float alpha, float eps,
        float lo, float hi, Tensor(a!) out) -> ()

No gradient: inputs are read as data.
"""

from __future__ import annotations

import torch

from cprl_fast.ops import _backend
from cprl_fast.ops._checks import (
    check_attack_step_args,
    check_float,
    check_out,
    check_tensor,
    dense_format,
)

__all__ = ["attack_step", "attack_step_", "random_start"]


@torch.library.register_fake("cprl_fast::attack_step")
def _attack_step_fake(x, grad, x0, alpha, eps, lo, hi):
    check_attack_step_args(x, grad, x0, alpha, eps, lo, hi)
    return torch.empty_like(x, memory_format=dense_format(x))


@torch.library.register_fake("cprl_fast::attack_step_out")
def _attack_step_out_fake(x, grad, x0, alpha, eps, lo, hi, out):
    check_attack_step_args(x, grad, x0, alpha, eps, lo, hi)
    check_out(x, out)


def attack_step(
    x: torch.Tensor,
    grad: torch.Tensor,
    x0: torch.Tensor,
    alpha: float,
    eps: float,
    lo: float = 0.0,
    hi: float = 1.0,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """One projected gradient-sign step, fused into one pass over memory::

        x' = clamp(clamp(x + alpha * sign(grad), x0 - eps, x0 + eps), lo, hi)

    ``sign(0) = sign(NaN) = 0`` (as ``torch.sign``); NaN in ``x`` or ``x0`` propagates.

    Args:
        x: current iterate, any shape, float16/bfloat16/float32/float64, pixels in ``[lo, hi]``.
        grad: gradient of the loss at ``x``, same shape, dtype and device.
        x0: the clean input the L-infinity ball is centred on, same shape, dtype and device.
        alpha: step size (pixel units, e.g. ``1/255``).
        eps: radius of the ball, ``>= 0``.
        lo, hi: the valid pixel range, ``lo <= hi``.
        out: optional tensor to write into (may be ``x`` itself; see :func:`attack_step_`).

    Returns:
        ``x'`` (``out`` when given), never requiring grad.

    Example::

        >>> x0 = torch.rand(1, 3, 8, 8)
        >>> x1 = attack_step(x0, torch.randn_like(x0), x0, alpha=1 / 255, eps=1 / 255)
        >>> bool((x1 - x0).abs().max() <= 1 / 255 + 1e-7)
        True
    """
    check_float(x, "x")
    check_tensor(grad, "grad")
    check_tensor(x0, "x0")
    args = (x.detach(), grad.detach(), x0.detach(), float(alpha), float(eps), float(lo), float(hi))
    check_attack_step_args(*args)
    if out is None:
        return _backend.op("attack_step", x)(*args)
    check_out(x, out)
    _backend.op("attack_step_out", x)(*args, out.detach())
    return out


def attack_step_(
    x: torch.Tensor,
    grad: torch.Tensor,
    x0: torch.Tensor,
    alpha: float,
    eps: float,
    lo: float = 0.0,
    hi: float = 1.0,
) -> torch.Tensor:
    """In-place :func:`attack_step`: overwrites and returns ``x``."""
    return attack_step(x, grad, x0, alpha, eps, lo, hi, out=x)


def random_start(
    x: torch.Tensor,
    eps: float,
    lo: float = 0.0,
    hi: float = 1.0,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """PGD's random start: ``clamp(x + U(-eps, eps), lo, hi)``, drawn from ``generator``.

    Args:
        x: clean input, any shape, floating dtype.
        eps: radius of the uniform noise, ``>= 0``.
        lo, hi: valid pixel range.
        generator: a ``torch.Generator`` on ``x``'s device, for reproducible starts.

    Returns:
        A new tensor like ``x`` (not requiring grad).
    """
    check_float(x, "x")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if generator is not None and generator.device.type != x.device.type:
        raise ValueError(
            f"generator must be on the device of x ({x.device}), got {generator.device}"
        )
    noise = torch.empty_like(x, memory_format=dense_format(x)).uniform_(
        -float(eps), float(eps), generator=generator
    )
    return (x.detach() + noise).clamp_(float(lo), float(hi))
