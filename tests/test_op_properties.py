"""Property-based: the three ops against their plain-PyTorch references on inputs Hypothesis
draws (shapes from one element up, every layout, float32, float64 and bfloat16, NaN and
infinities placed anywhere in the first input, every option variant), on the C++ CPU kernels.
Forward outputs must match (NaN where the reference has NaN); with float64 finite inputs the
gradients must match too. The examples are derandomized: CI runs the same ones every time."""

from __future__ import annotations

import math

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from cprl_fast.ops import SPECS  # noqa: E402
from cprl_fast.ops.spec import LAYOUTS  # noqa: E402

CASES = [(spec, variant) for spec in SPECS.values() for variant in spec.variants]
SPECIAL = st.sampled_from([math.nan, math.inf, -math.inf])


@st.composite
def op_inputs(draw):
    spec, variant = draw(st.sampled_from(CASES))
    shape = tuple(draw(st.integers(1, hi)) for hi in (3, 40, 6, 6))
    dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.bfloat16]))
    layout = draw(st.sampled_from(LAYOUTS))
    args = list(spec.sample(shape, dtype=dtype, layout=layout, seed=draw(st.integers(0, 9999)),
                            **variant))  # fmt: skip
    specials = draw(st.lists(st.tuples(st.integers(0, 10**6), SPECIAL), max_size=3))
    x = args[0]  # a fresh tensor in its layout: written in place, the layout stays
    for where, value in specials:
        x[torch.unravel_index(torch.tensor(where % x.numel()), x.shape)] = value
    return spec, variant, tuple(args), dtype, bool(specials)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(op_inputs())
def test_ops_match_their_references(case):
    spec, variant, args, dtype, has_specials = case
    got = spec.call(spec.public, args)
    want = spec.call(spec.reference, args)
    tol = spec.tolerance(dtype, variant)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        torch.testing.assert_close(g, w, equal_nan=True, **tol)
    if dtype != torch.float64 or has_specials or not spec.grad_args:
        return
    grads = []
    for fn in (spec.public, spec.reference):
        leaves = list(args)
        for i in spec.grad_args:
            leaves[i] = args[i].detach().clone().requires_grad_(True)
        outs = spec.call(fn, tuple(leaves))
        weight = torch.linspace(-1, 1, outs[0].numel(), dtype=dtype).reshape(outs[0].shape)
        grads.append(torch.autograd.grad((outs[0] * weight).sum(),
                                         [leaves[i] for i in spec.grad_args]))  # fmt: skip
    for g, w in zip(*grads, strict=True):
        torch.testing.assert_close(g, w, **tol)
