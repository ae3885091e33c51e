"""The Triton helpers' index maths in 64 bits, run under the interpreter (or on a GPU)."""

from __future__ import annotations

import pytest
import torch
from conftest import HAS_TRITON, INTERPRETED

if not (HAS_TRITON and (INTERPRETED or torch.cuda.is_available())):
    pytest.skip("needs triton (interpreted on the CPU, or a GPU)", allow_module_level=True)

import triton
import triton.language as tl
from cprl_fast.kernels._common import channel_row


@triton.jit
def _rows(i_ptr, out_ptr, C, HW, CHANNELS_LAST: tl.constexpr):
    k = tl.arange(0, 4)
    tl.store(out_ptr + k, channel_row(tl.load(i_ptr + k), C, HW, CHANNELS_LAST))


def test_channel_row_does_not_wrap_at_2_pow_31():
    device = "cuda" if torch.cuda.is_available() else "cpu"
    C, HW = 65536, 40000  # one sample has C * HW = 2.6e9 > 2^31 elements
    per_sample = C * HW
    flat = [5, per_sample - 1, per_sample + 7, 3 * per_sample + 65535]
    i = torch.tensor(flat, dtype=torch.int64, device=device)
    for channels_last in (True, False):
        out = torch.empty(4, dtype=torch.int64, device=device)
        _rows[(1,)](i, out, C, HW, CHANNELS_LAST=channels_last)
        if channels_last:
            want = [(v // per_sample) * C + v % C for v in flat]
        else:
            want = [v // HW for v in flat]
        assert out.tolist() == want
