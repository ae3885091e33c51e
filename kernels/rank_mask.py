"""Triton kernels of ``rank_mask`` (docs/maths.md §1), wrapped as ``cprl_fast::rank_mask_triton``
and ``cprl_fast::rank_mask_backward_triton`` with ``torch.library.triton_op``.

Forward: ``_channel_sums`` (one program per (n, block of channels), looping over pixels), the
masks, and ``_channel_elementwise`` (elementwise ``relu(f * M)``). The hard rank in float32
(C <= SORT_MAX_C) is ``_sorted_masks``: one program per sample sorts the channels' keys
(``tl.sort``, O(C log^2 C)); else ``_masks`` (one program per (n, block of channels): pairwise
comparison against every channel, tiled [BLOCK_I x BLOCK_J]; the soft rank sums sigmoids
instead). Both add the split reduction's partial sums themselves.
Backward: ``_backward_pass`` writes ``grad_f`` and reduces ``A = sum gy*gate*f`` (and, for the
soft rank, the channel sums), ``_offset_grad`` is the [N, C] epilogue (``grad_b`` in a fixed
order: deterministic; a torch sum of its blocks' shares only where N * C exceeds one block), and
the soft rank adds ``_soft_rank_grad`` and ``_channel_elementwise``. Launches per call: forward
3; backward 2 (hard rank, N * C <= 1024), 3 (hard) or 4-5 (soft).
Shapes: ``f`` [N, C, H, W] in float16/bfloat16/float32/float64; mask [N, C] in float32 (float64
for float64 ``f``); all per-channel arithmetic in that op-math type.
"""

from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from cprl_fast.checks import (
    acc_dtype,
    check_mask,
    check_optional_mask_grad,
    check_output_grad,
    check_rank_mask_args,
)

from ._common import (
    OFFSET_GRAD_BLOCK,
    RANK_BLOCK_I,
    RANK_BLOCK_J,
    SORT_MAX_C,
    TILE_WARPS,
    Geometry,
    channel_block,
    launch,
    native_schema,
    on_device_of,
    reduce_block,
    relu,
    row_elements,
    scalar,
    scalar_args,
    sigmoid,
    tile,
    tl_acc,
)


@triton.jit
def _channel_sums(
    f_ptr,
    out_ptr,
    C,
    HW,
    sn,
    sc,
    sp,
    CHUNK,
    ACC: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    n, c, cm, split, begin, splits = reduce_block(C, HW, CHUNK, BLOCK_C)
    acc = tl.zeros((BLOCK_C, BLOCK_P), dtype=ACC)
    for p in range(0, CHUNK, BLOCK_P):
        offs, m = tile(n, c, cm, begin + p, HW, sn, sc, sp, BLOCK_P)
        acc += tl.load(f_ptr + offs, mask=m, other=0.0).to(ACC)
    tl.store(out_ptr + (n * splits + split) * C + c, tl.sum(acc, axis=1), mask=cm)


@triton.jit
def _score_less(a, b):
    """Strict order of the stable ascending sort with NaN after +inf."""
    return (a < b) | ((b != b) & (a == a))


@triton.jit
def _split_sum(part_ptr, n, SPLITS, C, c, cm):
    """The channel sums of channels ``c`` of sample ``n`` from the partial sums [N, SPLITS, C]
    of a split reduction, added in split order (a fixed order: deterministic)."""
    row = part_ptr + n * SPLITS * C + c
    acc = tl.load(row, mask=cm, other=0.0)
    for split in range(1, SPLITS):
        acc += tl.load(row + split * C, mask=cm, other=0.0)
    return acc


@triton.jit
def _masks(
    part_ptr,
    b_ptr,
    mask_ptr,
    C,
    HW,
    SPLITS,
    temperature,
    tau,
    FROM_BITS: tl.constexpr,
    SOFT: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_I: tl.constexpr,
    BLOCK_J: tl.constexpr,
):
    """The masks of channels ``c`` of sample ``n``, their channel sums added from the partial
    sums [N, SPLITS, C] of ``_channel_sums`` here (no launch of its own)."""
    temperature = scalar(temperature, FROM_BITS)
    tau = scalar(tau, FROM_BITS)
    n, c, cm = channel_block(C, BLOCK_I)
    sc = _split_sum(part_ptr, n, SPLITS, C, c, cm) / HW
    rank = tl.zeros((BLOCK_I,), dtype=ACC)
    for j0 in range(0, C, BLOCK_J):
        j = j0 + tl.arange(0, BLOCK_J)
        jm = j < C
        sj = _split_sum(part_ptr, n, SPLITS, C, j, jm) / HW
        a = sj[None, :]
        b = sc[:, None]
        valid = jm[None, :] & (j[None, :] != c[:, None])
        if SOFT:
            term = tl.where(valid, sigmoid((b - a) / tau), 0.0)
        else:
            before = _score_less(a, b) | ((~_score_less(b, a)) & (j[None, :] < c[:, None]))
            term = tl.where(valid & before, 1.0, 0.0)
        rank += tl.sum(term.to(ACC), axis=1)
    bv = tl.load(b_ptr).to(ACC)
    cf = C * 1.0
    mask = sigmoid((rank - cf / 2.0 + bv * cf) / temperature)
    tl.store(mask_ptr + n * C + c, mask, mask=cm)


@triton.jit
def _ordered_bits(x):
    """The bits of float32 ``x`` as uint32 whose unsigned order is x's: any NaN last, -0 as +0
    (the mapping of csrc/core/rank_sort.h; ``^`` rather than ``~``, which the interpreter
    refuses on unsigned types)."""
    u = x.to(tl.uint32, bitcast=True)
    u = tl.where((u >> 31) == 1, u ^ 0xFFFFFFFF, u | 0x80000000)
    u = tl.where(x == 0, 0x80000000, u)
    return tl.where(x != x, 0xFFFFFFFF, u)


@triton.jit
def _sorted_masks(part_ptr, b_ptr, mask_ptr, C, HW, SPLITS, temperature, BLOCK: tl.constexpr):
    """The hard-rank masks of sample n (one program per sample; float32): each channel's key,
    its mean's ordered bits then its index (distinct keys in the stable ascending order, NaN
    last), sorted; the channel at sorted position i has rank i. The channel sums are added from
    the partial sums [N, SPLITS, C] here."""
    n = tl.program_id(0).to(tl.int64)
    c = tl.arange(0, BLOCK)
    cm = c < C
    means = _split_sum(part_ptr, n, SPLITS, C, c, cm) / HW
    key = (_ordered_bits(means).to(tl.uint64) << 32) | c.to(tl.uint64)
    key = tl.sort(tl.where(cm, key, 0xFFFFFFFFFFFFFFFF))  # padding last
    channel = (key & 0xFFFFFFFF).to(tl.int64)
    bv = tl.load(b_ptr).to(tl.float32)
    cf = C * 1.0
    mask = sigmoid((c.to(tl.float32) - cf / 2.0 + bv * cf) / temperature)
    tl.store(mask_ptr + n * C + channel, mask, mask=cm)


@triton.jit
def _channel_elementwise(
    x_ptr,
    v_ptr,
    out_ptr,
    ROWS,
    ROW_STEP,
    INNER,
    C,
    HW,
    ADD: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """out = x + v[channel] (ADD: the soft rank's term of grad_f) or relu(x * v[channel]) (the
    forward's apply pass), elementwise over a dense map, row by row (``row_elements``), last
    row first: it follows a reduction over the same map (``reduce_block``'s order) and starts
    on the rows that reduction left in L2."""
    for r in range(0, ROWS, ROW_STEP):
        row = r + tl.program_id(1)
        row = tl.where(row < ROWS, ROWS - 1 - row, row)  # rows past the end stay past it
        i, im, nc = row_elements(row, ROWS, INNER, C, HW, CHANNELS_LAST, BLOCK)
        v = tl.load(v_ptr + nc, mask=im, other=0.0)
        x = tl.load(x_ptr + i, mask=im, other=0.0).to(ACC)
        out = x + v if ADD else relu(x * v)
        tl.store(out_ptr + i, out.to(out_ptr.dtype.element_ty), mask=im)


@triton.jit
def _backward_pass(
    f_ptr,
    g_ptr,
    mask_ptr,
    gf_ptr,
    a_ptr,
    s_ptr,
    C,
    HW,
    sn,
    sc,
    sp,
    CHUNK,
    SOFT: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    """grad_f = gate * gy * M per element, and per (sample, channel, split) the partial sums of
    ``A = sum gy * gate * f`` and (SOFT: the soft rank's backward needs them) of ``f``."""
    n, c, cm, split, begin, splits = reduce_block(C, HW, CHUNK, BLOCK_C)
    m = tl.load(mask_ptr + n * C + c, mask=cm, other=0.0)[:, None]
    acc_a = tl.zeros((BLOCK_C, BLOCK_P), dtype=ACC)
    acc_s = tl.zeros((BLOCK_C, BLOCK_P), dtype=ACC)
    for p in range(0, CHUNK, BLOCK_P):
        offs, valid = tile(n, c, cm, begin + p, HW, sn, sc, sp, BLOCK_P)
        f = tl.load(f_ptr + offs, mask=valid, other=0.0).to(ACC)
        g = tl.load(g_ptr + offs, mask=valid, other=0.0).to(ACC)
        gg = tl.where(f * m <= 0, 0.0, g)  # torch.relu's gate: NaN passes
        tl.store(gf_ptr + offs, (gg * m).to(gf_ptr.dtype.element_ty), mask=valid)
        acc_a += gg * f
        if SOFT:
            acc_s += f
    part = (n * splits + split) * C + c
    tl.store(a_ptr + part, tl.sum(acc_a, axis=1), mask=cm)
    if SOFT:
        tl.store(s_ptr + part, tl.sum(acc_s, axis=1), mask=cm)


@triton.jit
def _offset_grad(
    a_ptr,
    s_ptr,
    gm_ptr,
    mask_ptr,
    g_ptr,
    sum_ptr,
    gb_ptr,
    N,
    C,
    SPLITS,
    temperature,
    FROM_BITS: tl.constexpr,
    HAS_GRAD_MASK: tl.constexpr,
    SOFT: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """The backward's [N, C] epilogue in one launch (as the CUDA ``offset_grad_kernel``), per
    block of BLOCK (sample, channel) pairs: ``D = A (+ grad_mask)`` with A added over the
    splits, ``share = D * M (1 - M)``; the block's share of ``grad_b = C / T * sum share`` in
    ``gb_ptr[block]`` (the caller adds the blocks in a fixed order); SOFT: ``G = share / T`` and
    the channel sums added over the splits, for ``_soft_rank_grad``."""
    temperature = scalar(temperature, FROM_BITS)
    nc = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = nc < N * C
    n, c = nc // C, nc % C
    a = _split_sum(a_ptr, n, SPLITS, C, c, valid)
    if HAS_GRAD_MASK:
        a += tl.load(gm_ptr + nc, mask=valid, other=0.0)
    m = tl.load(mask_ptr + nc, mask=valid, other=0.0)
    share = tl.where(valid, a * (m * (1.0 - m)), 0.0).to(ACC)
    tl.store(gb_ptr + tl.program_id(0), tl.sum(share, axis=0) * C / temperature)
    if SOFT:
        tl.store(g_ptr + nc, share / temperature, mask=valid)
        tl.store(sum_ptr + nc, _split_sum(s_ptr, n, SPLITS, C, c, valid), mask=valid)


@triton.jit
def _soft_rank_grad(
    s_ptr,
    g_ptr,
    ds_ptr,
    C,
    HW,
    tau,
    FROM_BITS: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_I: tl.constexpr,
    BLOCK_J: tl.constexpr,
):
    """ds_k = sum_{j != k} (G_k - G_j) sigmoid'((s_k - s_j)/tau) / tau / HW (S holds sums)."""
    tau = scalar(tau, FROM_BITS)
    n, k, km = channel_block(C, BLOCK_I)
    sk = tl.load(s_ptr + n * C + k, mask=km, other=0.0) / HW
    gk = tl.load(g_ptr + n * C + k, mask=km, other=0.0)
    acc = tl.zeros((BLOCK_I,), dtype=ACC)
    for j0 in range(0, C, BLOCK_J):
        j = j0 + tl.arange(0, BLOCK_J)
        jm = j < C
        sj = tl.load(s_ptr + n * C + j, mask=jm, other=0.0) / HW
        gj = tl.load(g_ptr + n * C + j, mask=jm, other=0.0)
        sig = sigmoid((sk[:, None] - sj[None, :]) / tau)
        term = (gk[:, None] - gj[None, :]) * sig * (1.0 - sig)
        valid = jm[None, :] & (j[None, :] != k[:, None])
        acc += tl.sum(tl.where(valid, term, 0.0).to(ACC), axis=1)
    tl.store(ds_ptr + n * C + k, acc / tau / HW, mask=km)


@triton_op("cprl_fast::rank_mask_triton", mutates_args=(), schema=native_schema("rank_mask"))
@on_device_of("f")
def rank_mask_triton(
    f: torch.Tensor, b: torch.Tensor, temperature: float, soft: bool, tau: float
) -> tuple[torch.Tensor, torch.Tensor]:
    check_rank_mask_args(f, b, temperature, soft, tau)
    geo = Geometry(f)
    acc = acc_dtype(f.dtype)
    y = torch.empty_like(geo.x)
    mask = torch.empty((geo.N, geo.C), dtype=acc, device=f.device)
    if geo.N == 0:
        return y, mask
    block_c, block_p, splits, chunk = geo.reduce_plan()
    partial = torch.empty((geo.N, splits, geo.C), dtype=acc, device=f.device)
    ACC = tl_acc(f.dtype)
    (temperature_arg, tau_arg), from_bits = scalar_args(f, temperature, tau)
    launch(_channel_sums)[geo.reduce_grid(block_c, splits)](
        geo.x,
        partial,
        *geo.reduce_args(chunk),
        ACC=ACC,
        BLOCK_C=block_c,
        BLOCK_P=block_p,
        num_warps=TILE_WARPS,
    )
    # the masks' arguments up to the temperature, the same for both kernels
    sums_to_mask = (partial, b.reshape(1).to(acc), mask, geo.C, geo.HW, splits)
    if not soft and acc == torch.float32 and geo.C <= SORT_MAX_C:
        launch(_sorted_masks)[(geo.N,)](
            *sums_to_mask,
            float(temperature),
            BLOCK=max(16, triton.next_power_of_2(geo.C)),
            num_warps=TILE_WARPS,
        )
    else:
        launch(_masks)[(geo.N, triton.cdiv(geo.C, RANK_BLOCK_I))](
            *sums_to_mask,
            temperature_arg,
            tau_arg,
            FROM_BITS=from_bits,
            SOFT=soft,
            ACC=ACC,
            BLOCK_I=RANK_BLOCK_I,
            BLOCK_J=RANK_BLOCK_J,
            num_warps=TILE_WARPS,
        )
    rows, inner, block, grid = geo.rows()
    launch(_channel_elementwise)[grid](
        geo.x,
        mask,
        y,
        rows,
        grid[1],
        inner,
        geo.C,
        geo.HW,
        ADD=False,
        CHANNELS_LAST=geo.channels_last,
        ACC=ACC,
        BLOCK=block,
    )
    return y, mask


@triton_op(
    "cprl_fast::rank_mask_backward_triton",
    mutates_args=(),
    schema=native_schema("rank_mask_backward"),
)
@on_device_of("f")
def rank_mask_backward_triton(
    grad_y: torch.Tensor,
    grad_mask: Optional[torch.Tensor],  # noqa: UP045 (schema inference)
    f: torch.Tensor,
    mask: torch.Tensor,
    b: torch.Tensor,
    temperature: float,
    soft: bool,
    tau: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    check_rank_mask_args(f, b, temperature, soft, tau)
    check_output_grad(f, grad_y, "grad_y")
    check_optional_mask_grad(f, grad_mask)
    check_mask(f, mask, "mask")
    geo = Geometry(f)
    acc = acc_dtype(f.dtype)
    grad_f = torch.empty_like(geo.x)
    if geo.N == 0:
        return grad_f, torch.zeros_like(b)
    g = geo.dense(grad_y)
    m = mask.to(acc).contiguous()
    block_c, block_p, splits, chunk = geo.reduce_plan()
    a_part = torch.empty((geo.N, splits, geo.C), dtype=acc, device=f.device)
    s_part = torch.empty_like(a_part) if soft else a_part  # only the soft rank reads f's sums
    ACC = tl_acc(f.dtype)
    launch(_backward_pass)[geo.reduce_grid(block_c, splits)](
        geo.x,
        g,
        m,
        grad_f,
        a_part,
        s_part,
        *geo.reduce_args(chunk),
        SOFT=soft,
        ACC=ACC,
        BLOCK_C=block_c,
        BLOCK_P=block_p,
        num_warps=TILE_WARPS,
    )
    (temperature_arg,), from_bits = scalar_args(f, temperature)
    blocks = triton.cdiv(geo.N * geo.C, OFFSET_GRAD_BLOCK)
    shares = torch.empty(b.shape if blocks == 1 else (blocks,), dtype=acc, device=f.device)
    # G and the channel sums: the soft rank's only (else a written buffer stands in: never an
    # input, which this op must not be seen to write)
    big_g = torch.empty_like(m) if soft else shares
    s_sum = torch.empty_like(m) if soft else shares
    gm = m if grad_mask is None else grad_mask.to(acc).contiguous()
    launch(_offset_grad)[(blocks,)](
        a_part,
        s_part,
        gm,
        m,
        big_g,
        s_sum,
        shares,
        geo.N,
        geo.C,
        splits,
        temperature_arg,
        FROM_BITS=from_bits,
        HAS_GRAD_MASK=grad_mask is not None,
        SOFT=soft,
        ACC=ACC,
        BLOCK=OFFSET_GRAD_BLOCK,
        num_warps=TILE_WARPS,
    )
    # the blocks' shares in a fixed order (deterministic); one block: no launch at all
    grad_b = (shares if blocks == 1 else shares.sum().reshape(b.shape)).to(b.dtype)
    if soft:
        tau_arg, from_bits = scalar_args(f, tau)
        ds = torch.empty_like(m)
        launch(_soft_rank_grad)[(geo.N, triton.cdiv(geo.C, RANK_BLOCK_I))](
            s_sum,
            big_g,
            ds,
            geo.C,
            geo.HW,
            *tau_arg,
            FROM_BITS=from_bits,
            ACC=ACC,
            BLOCK_I=RANK_BLOCK_I,
            BLOCK_J=RANK_BLOCK_J,
            num_warps=TILE_WARPS,
        )
        rows, inner, block, grid = geo.rows()
        launch(_channel_elementwise)[grid](
            grad_f,
            ds,
            grad_f,
            rows,
            grid[1],
            inner,
            geo.C,
            geo.HW,
            ADD=True,
            CHANNELS_LAST=geo.channels_last,
            ACC=ACC,
            BLOCK=block,
        )
    return grad_f, grad_b
