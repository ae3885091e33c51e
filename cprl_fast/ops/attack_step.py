"""``attack_step``: the fused gradient-sign step of FGSM/PGD (docs/maths.md §5).

Where it lives (``SPEC.files`` below lists the same):
  schema ``csrc/ops.cpp``; maths ``csrc/core/attack_step.h``; shared set-up
  ``csrc/glue/attack_step.h``; kernels ``csrc/cpu/attack_step_cpu.cpp``,
  ``csrc/cuda/attack_step_cuda.cu``, ``kernels/attack_step.py`` (Triton); reference
  ``cprl_fast/reference/attack_step.py``; tests ``tests/test_op_specs.py`` (shared, from ``SPEC``)
  and ``tests/test_attack_step.py``; benchmark ``bench/cases.py`` (from ``SPEC``).

Schema (declared in ``csrc/ops.cpp``)::

    cprl_fast::attack_step(Tensor x, Tensor grad, Tensor x0, float alpha, float eps,
        float lo, float hi) -> Tensor
    cprl_fast::attack_step_out(Tensor x, Tensor grad, Tensor x0, float alpha, float eps,
        float lo, float hi, Tensor(a!) out) -> ()

No gradient: inputs are read as data.
"""

from __future__ import annotations

import torch

from cprl_fast import reference
from cprl_fast.checks import (
    check_attack_step_args,
    check_eps,
    check_float,
    check_out,
    check_range,
    check_tensor,
    dense_format,
)
from cprl_fast.devices import to_device
from cprl_fast.ops import _backend
from cprl_fast.ops.spec import BadCall, OpSpec, in_layout

__all__ = ["SPEC", "attack_step", "attack_step_", "random_start"]


@torch.library.register_fake("cprl_fast::attack_step")
def _attack_step_fake(x, grad, x0, alpha, eps, lo, hi):
    check_attack_step_args(x, grad, x0, alpha, eps, lo, hi)
    return torch.empty_like(x, memory_format=dense_format(x))


@torch.library.register_fake("cprl_fast::attack_step_out")
def _attack_step_out_fake(x, grad, x0, alpha, eps, lo, hi, out):
    check_attack_step_args(x, grad, x0, alpha, eps, lo, hi)
    check_out(x, grad, x0, out)


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
        out: optional tensor to write into: it may be ``x``, ``grad`` or ``x0`` itself (see
            :func:`attack_step_`), but must not overlap any of them in part.

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
        return _backend.op_for("attack_step", x.device)(*args)
    check_out(x, grad, x0, out)
    _backend.op_for("attack_step_out", x.device)(*args, out.detach())
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
    """In-place :func:`attack_step`: overwrites and returns ``x``. ``x`` must not be a leaf
    that requires grad (as for any in-place op on such a tensor)."""
    if isinstance(x, torch.Tensor) and x.is_leaf and x.requires_grad:
        raise RuntimeError(
            "attack_step_: x is a leaf tensor that requires grad and cannot be overwritten in "
            "place; pass x.detach() (or use attack_step without out)"
        )
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
        generator: for reproducible starts, a ``torch.Generator`` on ``x``'s device, or on the
            CPU for any ``x``: the noise is then drawn on the CPU and copied to ``x``'s device,
            so the same seed gives the same start on every device (the evaluations' seeded
            generator is a CPU one).

    Returns:
        A new tensor like ``x`` (not requiring grad).
    """
    check_float(x, "x")
    check_eps(eps)
    check_range(lo, hi)
    draw_on = x.device if generator is None else generator.device
    if draw_on.type not in (x.device.type, "cpu"):
        raise ValueError(f"generator must be on the device of x ({x.device}) or on the CPU, "
                         f"got {generator.device}")  # fmt: skip
    noise = torch.empty_like(x, device=draw_on, memory_format=dense_format(x)).uniform_(
        -float(eps), float(eps), generator=generator
    )
    return (x.detach() + to_device(noise, x.device)).clamp_(float(lo), float(hi))


# -- the spec the shared tests and the benchmarks run -------------------------------------------


def _sample(shape, dtype=torch.float32, device="cpu", layout="contiguous", seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(shape, generator=g, dtype=torch.float64)
    x = (x0 + (torch.rand(shape, generator=g, dtype=torch.float64) - 0.5) * 0.02).clamp(0, 1)
    grad = torch.randn(shape, generator=g, dtype=torch.float64)
    grad[grad.abs() < 0.2] = 0.0  # sign(0) = 0: those pixels stay put
    x, grad, x0 = (in_layout(v.to(dtype=dtype, device=device), layout) for v in (x, grad, x0))
    return x, grad, x0, 1 / 255, 2 / 255, 0.0, 1.0


def _call(fn, args):
    return (fn(*args),)


SPEC = OpSpec(
    name="attack_step",
    public=attack_step,
    reference=reference.attack_step,
    sample=_sample,
    call=_call,
    variants=({},),
    shapes=((2, 3, 17, 9), (1, 1, 1, 1), (3, 3, 4, 5), (2, 3, 32, 32)),
    bench_shapes=((16, 3, 320, 320),),
    small_bench_shapes=((2, 3, 16, 16),),
    passes=("fwd",),
    bytes_moved={"fwd": 4},  # reads x, grad, x0; writes x'
    bad_calls=(
        BadCall(
            "grad of another shape",
            lambda a: (a[0], a[1][..., :1], *a[2:]),
            ValueError,
            "grad must have the shape of x",
        ),
        BadCall(
            "x0 of another dtype",
            lambda a: (*a[:2], a[2].double(), *a[3:]),
            TypeError,
            "x0 must have the dtype of x",
        ),
        BadCall(
            "negative eps",
            lambda a: (*a[:4], -0.1, *a[5:]),
            ValueError,
            "eps must be finite and >= 0",
        ),
        BadCall(
            "infinite eps",
            lambda a: (*a[:4], float("inf"), *a[5:]),
            ValueError,
            "eps must be finite and >= 0",
        ),
        BadCall("lo above hi", lambda a: (*a[:5], 1.0, 0.0), ValueError, "lo must be <= hi"),
        BadCall(
            "integer x",
            lambda a: tuple(v.int() if i < 3 else v for i, v in enumerate(a)),
            TypeError,
            "x must be float16, bfloat16, float32 or float64",
        ),
    ),
    files={
        "schema": "csrc/ops.cpp",
        "maths": "csrc/core/attack_step.h",
        "set-up": "csrc/glue/attack_step.h",
        "cpu": "csrc/cpu/attack_step_cpu.cpp",
        "cuda": "csrc/cuda/attack_step_cuda.cu",
        "triton": "kernels/attack_step.py",
        "reference": "cprl_fast/reference/attack_step.py",
        "tests": "tests/test_attack_step.py",
        "benchmark": "bench/cases.py",
    },
)
