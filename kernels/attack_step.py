"""Triton kernel of ``attack_step`` (docs/maths.md §5), wrapped as
``cprl_fast::attack_step_triton`` and ``cprl_fast::attack_step_out_triton``.

``x' = min(max(min(max(x + alpha*sign(g), x0 - eps), x0 + eps), lo), hi)`` in one elementwise
pass; sign(0) = sign(NaN) = 0 (torch.sign); max/min propagate NaN (torch.maximum/minimum).
"""

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from cprl_fast.checks import check_attack_step_args, check_out, dense_format

from ._common import (
    ELEMENTWISE_BLOCK,
    element_block,
    launch,
    native_schema,
    on_device_of,
    scalar,
    scalar_args,
    tl_acc,
)


@triton.jit
def _attack_step(
    x_ptr,
    g_ptr,
    x0_ptr,
    out_ptr,
    numel,
    alpha,
    eps,
    lo,
    hi,
    FROM_BITS: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    i, im = element_block(numel, BLOCK)
    x = tl.load(x_ptr + i, mask=im, other=0.0).to(ACC)
    g = tl.load(g_ptr + i, mask=im, other=0.0).to(ACC)
    x0 = tl.load(x0_ptr + i, mask=im, other=0.0).to(ACC)
    sign = tl.where(g > 0, 1.0, tl.where(g < 0, -1.0, 0.0)).to(ACC)
    alpha = scalar(alpha, FROM_BITS)
    eps = scalar(eps, FROM_BITS)
    lo = scalar(lo, FROM_BITS)
    hi = scalar(hi, FROM_BITS)
    v = x + alpha * sign
    v = tl.maximum(v, x0 - eps, propagate_nan=tl.PropagateNan.ALL)
    v = tl.minimum(v, x0 + eps, propagate_nan=tl.PropagateNan.ALL)
    v = tl.maximum(v, lo, propagate_nan=tl.PropagateNan.ALL)
    v = tl.minimum(v, hi, propagate_nan=tl.PropagateNan.ALL)
    tl.store(out_ptr + i, v.to(out_ptr.dtype.element_ty), mask=im)


def _step_into(x, grad, x0, alpha, eps, lo, hi, out):
    numel = x.numel()
    if numel == 0:
        return
    values, from_bits = scalar_args(x, alpha, eps, lo, hi)
    launch(_attack_step)[(triton.cdiv(numel, ELEMENTWISE_BLOCK),)](
        x,
        grad,
        x0,
        out,
        numel,
        *values,
        FROM_BITS=from_bits,
        ACC=tl_acc(x.dtype),
        BLOCK=ELEMENTWISE_BLOCK,
    )


def _dense(x, grad, x0):
    """x, grad and x0 dense in x's kernel memory format (see ``dense_format``)."""
    fmt = dense_format(x)
    return fmt, tuple(t.contiguous(memory_format=fmt) for t in (x, grad, x0))


@triton_op("cprl_fast::attack_step_triton", mutates_args=(), schema=native_schema("attack_step"))
@on_device_of("x")
def attack_step_triton(
    x: torch.Tensor, grad: torch.Tensor, x0: torch.Tensor, alpha: float, eps: float, lo: float,
    hi: float,
) -> torch.Tensor:  # fmt: skip
    check_attack_step_args(x, grad, x0, alpha, eps, lo, hi)
    _, dense = _dense(x, grad, x0)
    out = torch.empty_like(dense[0])
    _step_into(*dense, alpha, eps, lo, hi, out)
    return out


@triton_op(
    "cprl_fast::attack_step_out_triton",
    mutates_args=("out",),
    schema=native_schema("attack_step_out"),
)
@on_device_of("x")
def attack_step_out_triton(
    x: torch.Tensor, grad: torch.Tensor, x0: torch.Tensor, alpha: float, eps: float, lo: float,
    hi: float, out: torch.Tensor,
) -> None:  # fmt: skip
    """Writes into ``out`` directly when it is dense in x's format (it may be x), else through
    a temporary."""
    check_attack_step_args(x, grad, x0, alpha, eps, lo, hi)
    check_out(x, grad, x0, out)
    fmt, dense = _dense(x, grad, x0)
    if out.is_contiguous(memory_format=fmt):
        _step_into(*dense, alpha, eps, lo, hi, out)
        return
    tmp = torch.empty_like(dense[0])
    _step_into(*dense, alpha, eps, lo, hi, tmp)
    out.copy_(tmp)
