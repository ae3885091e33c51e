"""Helpers shared by the Triton kernels: scalar maths (as in csrc/core/common.h) and launch
geometry of a dense feature map."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from cprl_fast.checks import acc_dtype, dense_format


def native_schema(op: str) -> str:
    """The schema of ``cprl_fast::<op>`` as csrc/ops.cpp declares it, without the name: every
    Triton twin is registered with exactly the native op's schema (one schema per op)."""
    schema = str(getattr(torch.ops.cprl_fast, op).default._schema)
    return schema[schema.index("(") :]


@triton.jit
def sigmoid(x):
    """1 / (1 + exp(-x)), as torch.sigmoid: exactly 0 and 1 at the extremes."""
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def relu(v):
    """max(0, v) that propagates NaN."""
    return tl.where(v < 0, 0.0, v).to(v.dtype)


@triton.jit
def tile_offsets(n, c, p, sn, sc, sp):
    """Element offsets of the [channels x pixels] tile (c, p) of sample n (64-bit)."""
    return n * sn + c[:, None].to(tl.int64) * sc + p[None, :].to(tl.int64) * sp


@triton.jit
def channel_block(C, BLOCK_C: tl.constexpr):
    """This program's sample n (64-bit), its block of channels c and their validity mask, for a
    grid (N, cdiv(C, BLOCK_C))."""
    n = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    return n, c, c < C


@triton.jit
def tile(n, c, cm, p0, HW, sn, sc, sp, BLOCK_P: tl.constexpr):
    """Offsets and validity mask of the [channels x BLOCK_P pixels] tile at pixel p0 of sample n."""
    p = p0 + tl.arange(0, BLOCK_P)
    return tile_offsets(n, c, p, sn, sc, sp), cm[:, None] & (p < HW)[None, :]


@triton.jit
def element_block(numel, BLOCK: tl.constexpr):
    """This program's flat element indices (64-bit) and their validity mask (1-D grid)."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    return i, i < numel


@triton.jit
def channel_row(i, C, HW, CHANNELS_LAST: tl.constexpr):
    """Row n * C + c of the [N, C] arrays for flat element index i of a dense map."""
    if CHANNELS_LAST:
        return (i // (HW * C)) * C + i % C
    else:
        return i // HW


@triton.jit
def scalar(ptr, index, value, FROM_PTR: tl.constexpr):
    """A float parameter: ``value`` (a float32 launch argument) or, for float64 work, entry
    ``index`` of the float64 tensor at ``ptr`` (Triton passes Python floats as float32)."""
    if FROM_PTR:
        return tl.load(ptr + index)
    else:
        return value


def scalar_args(like: torch.Tensor, *values: float) -> tuple[torch.Tensor, bool]:
    """(tensor, FROM_PTR) for :func:`scalar`: a float64 tensor of ``values`` when ``like`` is
    float64, else ``like`` itself as an unread placeholder."""
    if like.dtype == torch.float64:
        return torch.tensor(values, dtype=torch.float64, device=like.device), True
    return like, False


def tl_acc(dtype: torch.dtype):
    """Triton op-math type for a feature dtype (float64 stays float64, the rest float32)."""
    return tl.float64 if acc_dtype(dtype) == torch.float64 else tl.float32


class Geometry:
    """A feature map made dense in its kernel layout, with the strides the kernels take.

    ``x``: the dense tensor; ``N, C, HW``; strides ``sn, sc, sp`` of (n, c, p) in elements;
    ``channels_last``: whether the channel stride is 1.
    """

    def __init__(self, f: torch.Tensor):
        self.format = dense_format(f)
        self.x = f.contiguous(memory_format=self.format)
        self.N, self.C, h, w = self.x.shape
        self.HW = h * w
        self.channels_last = self.format == torch.channels_last
        if self.channels_last:
            self.sn, self.sc, self.sp = self.HW * self.C, 1, self.C
        else:
            self.sn, self.sc, self.sp = self.C * self.HW, self.HW, 1

    def dense(self, t: torch.Tensor) -> torch.Tensor:
        return t.contiguous(memory_format=self.format)

    def reduce_blocks(self) -> tuple[int, int]:
        """(BLOCK_C, BLOCK_P) of a [channels x pixels] tile, coalesced along the unit stride."""
        if self.channels_last:
            return min(64, triton.next_power_of_2(self.C)), 32
        return 8, min(256, max(16, triton.next_power_of_2(self.HW)))


ELEMENTWISE_BLOCK = 1024
RANK_BLOCK_I = 32
RANK_BLOCK_J = 64
