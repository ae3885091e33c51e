"""The Triton helpers' index maths in 64 bits, run under the interpreter (or on a GPU)."""

from __future__ import annotations

import pytest
import torch
from conftest import HAS_TRITON, INTERPRETED

if not (HAS_TRITON and (INTERPRETED or torch.cuda.is_available())):
    pytest.skip("needs triton (interpreted on the CPU, or a GPU)", allow_module_level=True)

import triton
import triton.language as tl
from cprl_fast.kernels._common import row_elements


@triton.jit
def _rows(out_ptr, row, INNER, C, HW, CHANNELS_LAST: tl.constexpr):
    i, _, nc = row_elements(row, row + 1, INNER, C, HW, CHANNELS_LAST, 4)
    tl.store(out_ptr + tl.arange(0, 4), i)
    tl.store(out_ptr + 4 + tl.arange(0, 4), nc)


def test_row_elements_do_not_wrap_at_2_pow_31():
    device = "cuda" if torch.cuda.is_available() else "cpu"
    C, HW = 65536, 40000  # one sample has C * HW = 2.6e9 > 2^31 elements
    for channels_last in (True, False):
        inner = C if channels_last else HW
        row = 3 * HW + 17 if channels_last else 3 * C + 17  # a row of sample 3
        out = torch.empty(8, dtype=torch.int64, device=device)
        _rows[(1,)](out, row, inner, C, HW, CHANNELS_LAST=channels_last)
        flat = [row * inner + k for k in range(4)]
        nc = [(row // HW) * C + k for k in range(4)] if channels_last else [row] * 4
        assert out.tolist() == flat + nc


from cprl_fast.kernels._common import scalar, scalar_args  # noqa: E402


@triton.jit
def _scalars(out_ptr, a, b, FROM_BITS: tl.constexpr):
    tl.store(out_ptr, scalar(a, FROM_BITS))
    tl.store(out_ptr + 1, scalar(b, FROM_BITS))


def test_float64_scalars_travel_exactly_without_a_tensor():
    device = "cuda" if torch.cuda.is_available() else "cpu"
    like = torch.empty(1, dtype=torch.float64)
    values = (1 / 3, -2.5e-300)  # neither is a float32
    args, from_bits = scalar_args(like, *values)
    assert from_bits and all(isinstance(v, int) for v in args)  # no host-to-device copy
    out = torch.empty(2, dtype=torch.float64, device=device)
    _scalars[(1,)](out, *args, FROM_BITS=from_bits)
    assert out.tolist() == list(values)  # bit for bit
