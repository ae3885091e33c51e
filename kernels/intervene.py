"""Triton kernels of ``intervene`` (docs/maths.md §2), wrapped as ``cprl_fast::intervene_triton``
and ``cprl_fast::intervene_backward_triton`` with ``torch.library.triton_op``.

``out = relu(t * kt + f * kf)`` with ``(kf, kt) = (M, 1 - M)`` for ``"sf"`` and ``(1 - M, M)``
for ``"nc"``. Forward: one elementwise pass, row by row (``row_elements``). Backward: one
program per (n, block of channels, pixel split) loops over its pixels, writes
``grad_f = g*gate*kf`` and ``grad_t = g*gate*kt`` and reduces partial sums of
``grad_mask = sgn * sum g*gate*(f - t)`` (sgn = +1 for sf, -1 for nc), added in a fixed order:
no atomics.
"""

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from cprl_fast.checks import acc_dtype, check_intervene_args, check_output_grad

from ._common import (
    WIDE_TILE_WARPS,
    Geometry,
    launch,
    native_schema,
    on_device_of,
    reduce_block,
    relu,
    row_elements,
    tile,
    tl_acc,
)


@triton.jit
def _weights(m, NC: tl.constexpr):
    if NC:
        return 1.0 - m, m
    else:
        return m, 1.0 - m


@triton.jit
def _forward(
    f_ptr,
    t_ptr,
    mask_ptr,
    out_ptr,
    ROWS,
    ROW_STEP,
    INNER,
    C,
    HW,
    NC: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    for r in range(0, ROWS, ROW_STEP):
        i, im, nc = row_elements(r + tl.program_id(1), ROWS, INNER, C, HW, CHANNELS_LAST, BLOCK)
        kf, kt = _weights(tl.load(mask_ptr + nc, mask=im, other=0.0), NC)
        f = tl.load(f_ptr + i, mask=im, other=0.0).to(ACC)
        t = tl.load(t_ptr + i, mask=im, other=0.0).to(ACC)
        tl.store(out_ptr + i, relu(t * kt + f * kf).to(out_ptr.dtype.element_ty), mask=im)


@triton.jit
def _backward_pass(
    g_ptr,
    f_ptr,
    t_ptr,
    mask_ptr,
    gf_ptr,
    gt_ptr,
    gm_ptr,
    C,
    HW,
    sn,
    sc,
    sp,
    CHUNK,
    NC: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    n, c, cm, split, begin, splits = reduce_block(C, HW, CHUNK, BLOCK_C)
    m = tl.load(mask_ptr + n * C + c, mask=cm, other=0.0)[:, None]
    kf, kt = _weights(m, NC)
    acc = tl.zeros((BLOCK_C, BLOCK_P), dtype=ACC)
    for p in range(0, CHUNK, BLOCK_P):
        offs, valid = tile(n, c, cm, begin + p, HW, sn, sc, sp, BLOCK_P)
        f = tl.load(f_ptr + offs, mask=valid, other=0.0).to(ACC)
        t = tl.load(t_ptr + offs, mask=valid, other=0.0).to(ACC)
        g = tl.load(g_ptr + offs, mask=valid, other=0.0).to(ACC)
        g = tl.where(t * kt + f * kf <= 0, 0.0, g)  # torch.relu's gate: NaN passes
        tl.store(gf_ptr + offs, (g * kf).to(gf_ptr.dtype.element_ty), mask=valid)
        tl.store(gt_ptr + offs, (g * kt).to(gt_ptr.dtype.element_ty), mask=valid)
        acc += g * (f - t)
    total = tl.sum(acc, axis=1)
    if NC:
        total = -total
    tl.store(gm_ptr + (n * splits + split) * C + c, total, mask=cm)


@triton_op("cprl_fast::intervene_triton", mutates_args=(), schema=native_schema("intervene"))
@on_device_of("f")
def intervene_triton(
    f: torch.Tensor, t: torch.Tensor, mask: torch.Tensor, mode: str
) -> torch.Tensor:
    check_intervene_args(f, t, mask, mode)
    geo = Geometry(f)
    out = torch.empty_like(geo.x)
    if geo.N == 0:
        return out
    rows, inner, block, grid = geo.rows()
    launch(_forward)[grid](
        geo.x,
        geo.dense(t),
        mask.to(acc_dtype(f.dtype)).contiguous(),
        out,
        rows,
        grid[1],
        inner,
        geo.C,
        geo.HW,
        NC=mode == "nc",
        CHANNELS_LAST=geo.channels_last,
        ACC=tl_acc(f.dtype),
        BLOCK=block,
    )
    return out


@triton_op(
    "cprl_fast::intervene_backward_triton",
    mutates_args=(),
    schema=native_schema("intervene_backward"),
)
@on_device_of("f")
def intervene_backward_triton(
    grad: torch.Tensor, f: torch.Tensor, t: torch.Tensor, mask: torch.Tensor, mode: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    check_intervene_args(f, t, mask, mode)
    check_output_grad(f, grad, "grad")
    geo = Geometry(f)
    acc = acc_dtype(f.dtype)
    grad_f = torch.empty_like(geo.x)
    grad_t = torch.empty_like(geo.x)
    if geo.N == 0:
        return grad_f, grad_t, torch.zeros((0, geo.C), dtype=mask.dtype, device=f.device)
    block_c, block_p, splits, chunk = geo.reduce_plan()
    # the kernel writes partial sums [N, splits, C]; with one split they are grad_mask itself
    partial = torch.empty((geo.N, geo.C) if splits == 1 else (geo.N, splits, geo.C), dtype=acc,
                          device=f.device)  # fmt: skip
    launch(_backward_pass)[geo.reduce_grid(block_c, splits)](
        geo.dense(grad),
        geo.x,
        geo.dense(t),
        mask.to(acc).contiguous(),
        grad_f,
        grad_t,
        partial,
        *geo.reduce_args(chunk),
        NC=mode == "nc",
        ACC=tl_acc(f.dtype),
        BLOCK_C=block_c,
        BLOCK_P=block_p,
        num_warps=WIDE_TILE_WARPS,
    )
    # the splits' sums in a fixed order (deterministic); one split: no launch at all
    grad_m = partial.sum(dim=1) if splits > 1 else partial
    return grad_f, grad_t, grad_m.to(mask.dtype)
