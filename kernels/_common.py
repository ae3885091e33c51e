"""Helpers shared by the Triton kernels: scalar maths (as in csrc/core/common.h) and launch
geometry of a dense feature map."""

from __future__ import annotations

import functools
import inspect
import os
import struct
from collections.abc import Callable

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

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
def reduce_block(C, HW, CHUNK, BLOCK_C: tl.constexpr):
    """This program's tile of a channel reduction, on a 1-D grid of N x splits x
    cdiv(C, BLOCK_C) programs (``Geometry.reduce_grid``) taken channel blocks fastest, then
    pixel splits, then samples: the programs, which a GPU starts in order, walk the map in
    memory order in either layout, so the pass that follows (taken last row first) starts on
    what they left in L2. Returns the sample n (64-bit), its block of channels c and their
    validity mask, the split, the first pixel of its range [begin, begin + CHUNK) and the
    number of splits (the partial sums are [N, splits, C]). The caller loops
    ``for p in range(0, CHUNK, BLOCK_P)`` over ``begin + p`` (integer loop bounds: Triton's
    interpreter cannot loop from a program id); the tiles mask the pixels past HW."""
    # 32-bit division: the grid, and so the channel blocks and the splits, are below 2^31
    pid = tl.program_id(0)
    blocks = tl.cdiv(C, BLOCK_C).to(tl.int32)
    splits = tl.cdiv(HW, CHUNK).to(tl.int32)
    rest = pid // blocks
    split = rest % splits
    c = (pid % blocks) * BLOCK_C + tl.arange(0, BLOCK_C)
    return (rest // splits).to(tl.int64), c, c < C, split, split * CHUNK, splits


@triton.jit
def element_block(numel, BLOCK: tl.constexpr):
    """This program's flat element indices (64-bit) and their validity mask (1-D grid)."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    return i, i < numel


@triton.jit
def row_elements(row, ROWS, INNER, C, HW, CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr):
    """A dense map seen as rows of a contiguous inner dimension (NCHW: the N*C channel rows of
    HW pixels; channels_last: the N*HW pixels of C channels): for row ``row`` and this
    program's block of the inner dimension (grid dimension 0), the flat element indices
    (64-bit), their validity mask (also false for a row past ROWS), and each element's channel
    row n*C + c. One division per row, none per element. Callers loop
    ``for r in range(0, ROWS, ROW_STEP)`` over ``row = r + program_id(1)`` (integer loop bounds:
    Triton's interpreter cannot loop from a program id)."""
    k = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    r = tl.cast(row, tl.int64)
    if CHANNELS_LAST:
        nc = r // HW * C + k
    else:
        nc = r + tl.zeros_like(k).to(tl.int64)
    return r * INNER + k, (k < INNER) & (r < ROWS), nc


@triton.jit
def scalar(value, FROM_BITS: tl.constexpr):
    """A float parameter: ``value`` itself (a float32 launch argument), or for float64 work the
    float64 whose IEEE bits ``value`` carries as an integer (Triton passes Python floats as
    float32; the bits travel exactly, with no tensor and no host-to-device copy per call)."""
    if FROM_BITS:
        return value.to(tl.int64).to(tl.float64, bitcast=True)
    else:
        return value


def scalar_args(like: torch.Tensor, *values: float) -> tuple[tuple, bool]:
    """(the launch arguments, FROM_BITS) for :func:`scalar`: for float64 work each value's
    IEEE-754 bits as a signed 64-bit integer, else the floats themselves."""
    if like.dtype == torch.float64:
        return tuple(struct.unpack("<q", struct.pack("<d", float(v)))[0] for v in values), True
    return tuple(float(v) for v in values), False


def on_device_of(name: str) -> Callable:
    """Decorator of a Triton op: its launches go to the device of its tensor argument ``name``
    (``torch.cuda.device``), not to whichever device is current: a tensor on cuda:1 while cuda:0
    is current would otherwise be read by a kernel on cuda:0 (an illegal address). Nothing on
    the CPU (the interpreter) and while torch.compile traces (the compiled graph guards the
    device itself)."""

    def wrap(fn: Callable) -> Callable:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def run(*args, **kwargs):
            t = signature.bind(*args, **kwargs).arguments[name]
            if t.device.type != "cuda" or torch.compiler.is_compiling():
                return fn(*args, **kwargs)
            with torch.cuda.device(t.device):
                return fn(*args, **kwargs)

        return run

    return wrap


def launch(kernel):
    """``wrap_triton(kernel)``, through which torch.compile traces a Triton op's launches; or,
    where this torch's wrap_triton refuses the interpreter's functions (torch 2.11 under
    ``TRITON_INTERPRET=1``), the kernel itself: an eager launch needs no wrapping."""
    try:
        return wrap_triton(kernel)
    except RuntimeError:
        if os.environ.get("TRITON_INTERPRET") != "1":
            raise
        return kernel


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

    def rows(self) -> tuple[int, int, int, tuple[int, int]]:
        """(rows, inner, BLOCK, grid) of the elementwise kernels (see ``row_elements``): grid
        (inner blocks, rows up to 65535; the kernel loops over the rest)."""
        rows, inner = (
            (self.N * self.HW, self.C) if self.channels_last else (self.N * self.C, self.HW)
        )
        block = min(ELEMENTWISE_BLOCK, max(128, triton.next_power_of_2(inner)))
        return rows, inner, block, (triton.cdiv(inner, block), min(rows, 65535))

    def dense(self, t: torch.Tensor) -> torch.Tensor:
        return t.contiguous(memory_format=self.format)

    def reduce_plan(self) -> tuple[int, int, int, int]:
        """(BLOCK_C, BLOCK_P, splits, chunk) of a channel reduction: [channels x pixels] tiles
        coalesced along the unit stride; channels_last maps also split their pixels into
        ``splits`` ranges of ``chunk`` pixels (a multiple of BLOCK_P), each its own program
        writing partial sums [N, splits, C] (as the CUDA NHWC path does), so that a few
        samples and channel blocks still fill the GPU."""
        if self.channels_last:
            block_c, block_p = min(64, triton.next_power_of_2(self.C)), 32
            splits = min(64, max(1, triton.cdiv(self.HW, 256)))
        else:
            block_c, block_p = 8, min(256, max(16, triton.next_power_of_2(self.HW)))
            splits = 1
        chunk = triton.cdiv(triton.cdiv(self.HW, splits), block_p) * block_p
        return block_c, block_p, triton.cdiv(self.HW, chunk), chunk

    def reduce_args(self, chunk: int) -> tuple[int, int, int, int, int, int]:
        """What a channel reduction kernel is told of the map, in its argument order after its
        pointers: ``C, HW, sn, sc, sp, CHUNK`` (``chunk`` from :meth:`reduce_plan`)."""
        return self.C, self.HW, self.sn, self.sc, self.sp, chunk

    def reduce_grid(self, block_c: int, splits: int) -> tuple[int]:
        """The 1-D grid of a channel reduction (``reduce_block``)."""
        return (self.N * splits * triton.cdiv(self.C, block_c),)


ELEMENTWISE_BLOCK = 1024
#: (sample, channel) pairs per program of rank_mask's backward epilogue (``_offset_grad``): up
#: to this many (N * C), one program and no separate sum of the blocks' shares.
OFFSET_GRAD_BLOCK = 1024
RANK_BLOCK_I = 32
RANK_BLOCK_J = 64
#: The largest C whose float32 hard rank one program sorts (``_sorted_masks``: the keys stay in
#: registers; bench/aot_check.py checks the largest block for spills); past it, and in float64,
#: the pairwise count.
SORT_MAX_C = 4096
#: Warps of the reductions and of the pairwise rank kernels: their [2048-element] tiles hold
#: several operands, which spill registers at 4 warps (bench/aot_check.py checks for spills).
TILE_WARPS = 8
#: intervene's backward keeps five operands per tile element: twice the warps.
WIDE_TILE_WARPS = 16
