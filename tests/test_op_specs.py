"""The shared op tests, run from every op's spec (``cprl_fast.ops.SPECS``): forward and backward
against the reference over odd shapes, every layout and dtype and each option variant, float64
gradcheck and gradgradcheck, opcheck of the forward and backward ops, the empty batch, and the
same error for the same bad call from the C++ kernel, the fake kernel, the Triton kernel and
the public function.

Each runs once per (device, backend) of ``conftest.BACKENDS``. An op's own behaviour (ties,
NaN order, in-place forms, ...) is tested in ``tests/test_<op>.py``.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import HAS_TRITON, INTERPRETED
from op_testing import gradcheck_shape

from cprl_fast import ops
from cprl_fast.ops import SPECS, _backend
from cprl_fast.ops.spec import DTYPES, LAYOUTS, like, seed_of, unaligned

CASES = [(spec, variant) for spec in SPECS.values() for variant in spec.variants]
CASE_IDS = [f"{s.name}-{'-'.join(map(str, v.values())) or 'default'}" for s, v in CASES]
DIFFERENTIABLE = [(s, v) for s, v in CASES if s.grad_args]
DIFF_IDS = [i for (s, _), i in zip(CASES, CASE_IDS, strict=True) if s.grad_args]


def _shape_cases():
    for (spec, variant), cid in zip(CASES, CASE_IDS, strict=True):
        for shape in spec.shapes:
            yield pytest.param(spec, variant, shape, id=f"{cid}-{'x'.join(map(str, shape))}")


def _outputs(spec, fn, args):
    return tuple(spec.call(fn, args))


def _skip_interpreted_triton(device, backend, what):
    if backend == "triton" and device.type == "cpu":
        pytest.skip(f"triton_op fails {what} under the interpreter (the GPU run covers it)")


def _grads(spec, fn, args, seed):
    """Outputs and the gradients of ``args[i]`` (i in grad_args) for random output grads."""
    leaves = list(args)
    for i in spec.grad_args:
        leaves[i] = args[i].detach().clone().requires_grad_(True)
    outs = _outputs(spec, fn, tuple(leaves))
    gouts = [like(o, seed + k) for k, o in enumerate(outs)]
    got = torch.autograd.grad(outs, [leaves[i] for i in spec.grad_args], gouts)
    return outs, got


@pytest.mark.parametrize(("spec", "variant", "shape"), list(_shape_cases()))
@pytest.mark.parametrize("layout", LAYOUTS)
def test_forward_matches_reference(device, spec, variant, shape, layout):
    args = spec.sample(shape, device=device, layout=layout, seed=seed_of(shape, layout), **variant)
    got = _outputs(spec, spec.public, args)
    want = _outputs(spec, spec.reference, args)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        torch.testing.assert_close(g, w, **spec.tolerance(torch.float32, variant))


def assert_matches_reference_in(spec, variant, args, dtype):
    """Outputs (and, for a differentiable op, gradients) of ``args`` in ``dtype`` against the
    reference, at the dtype's tolerance."""
    close = spec.tolerance(dtype, variant)
    if not spec.grad_args:
        for g, w in zip(_outputs(spec, spec.public, args), _outputs(spec, spec.reference, args),
                        strict=True):  # fmt: skip
            assert g.dtype == w.dtype
            torch.testing.assert_close(g, w, **close)
        return
    outs, got = _grads(spec, spec.public, args, 7)
    outs_ref, want = _grads(spec, spec.reference, args, 7)
    for g, w in zip(outs, outs_ref, strict=True):
        assert g.dtype == w.dtype
        torch.testing.assert_close(g, w, **close)
    # gradients of scalars and [N, C] vectors sum over many elements: a looser bound
    loose = {"rtol": max(close["rtol"], 1e-4), "atol": max(close["atol"], 1e-4)}
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        torch.testing.assert_close(g, w, **(close if g.dim() == 4 else loose))


@pytest.mark.parametrize(("spec", "variant"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_dtypes(device, spec, variant, dtype):
    args = spec.sample(spec.shapes[0], dtype=dtype, device=device, seed=3, **variant)
    assert_matches_reference_in(spec, variant, args, dtype)


@pytest.mark.parametrize(("spec", "variant"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("placement", ["contiguous", "channels_last", "unaligned"])
def test_packed_rows(device, spec, variant, dtype, placement):
    """Rows (HW pixels, or C channels in channels_last) a multiple of 8 long, where the CUDA
    kernels move 16-byte packs of every dtype, and the same values one element off alignment,
    where they must fall back to single elements."""
    layout = "contiguous" if placement == "unaligned" else placement
    args = spec.sample((2, 16, 4, 6), dtype=dtype, device=device, layout=layout, seed=5, **variant)
    if placement == "unaligned":
        args = unaligned(args)
        maps = [a for a in args if isinstance(a, torch.Tensor) and a.dim() == 4]
        assert maps and all(a.data_ptr() % 16 and a.is_contiguous() for a in maps)
    assert_matches_reference_in(spec, variant, args, dtype)


@pytest.mark.parametrize(("spec", "variant"), DIFFERENTIABLE, ids=DIFF_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_backward_matches_reference(device, spec, variant, layout):
    for shape in spec.shapes[:3]:
        args = spec.sample(shape, dtype=torch.float64, device=device, layout=layout,
                           seed=seed_of(shape, layout, "bwd"), **variant)  # fmt: skip
        _, got = _grads(spec, spec.public, args, 11)
        _, want = _grads(spec, spec.reference, args, 11)
        for g, w in zip(got, want, strict=True):
            assert g.shape == w.shape
            torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-9)


def _differentiable(spec, variant, device, layout):
    """The public function of the op's differentiable inputs, and those inputs (float64
    leaves of a gradcheck shape), for gradcheck and gradgradcheck."""
    args = list(spec.sample(gradcheck_shape(device, (2, 6, 3, 2)), dtype=torch.float64,
                            device=device, layout=layout, seed=21, **variant))  # fmt: skip
    for i in spec.grad_args:
        args[i] = args[i].detach().clone().requires_grad_(True)

    def fn(*diff):
        full = list(args)
        for i, d in zip(spec.grad_args, diff, strict=True):
            full[i] = d
        return _outputs(spec, spec.public, tuple(full))

    return fn, tuple(args[i] for i in spec.grad_args)


@pytest.mark.parametrize(("spec", "variant"), DIFFERENTIABLE, ids=DIFF_IDS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_gradcheck(device, spec, variant, layout):
    fn, inputs = _differentiable(spec, variant, device, layout)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize(("spec", "variant"), DIFFERENTIABLE, ids=DIFF_IDS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_gradgradcheck(device, spec, variant, layout):
    """Second order (under create_graph the backward is cprl_fast::<op>_vjp, the reference's
    gradient in differentiable ops), with no warning: autograd's fallback for the backward op
    warned and returned zeros."""
    fn, inputs = _differentiable(spec, variant, device, layout)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.autograd.gradgradcheck(fn, inputs, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize(("spec", "variant"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_opcheck(device_backend, spec, variant, layout):
    device, backend = device_backend
    _skip_interpreted_triton(device, backend, "opcheck's fake check")
    args = list(spec.sample((2, 6, 3, 4), device=device, layout=layout, seed=2, **variant))
    for i in spec.grad_args:
        args[i] = args[i].detach().requires_grad_(True)
    _, forward = _backend.kernel(spec.name, device)
    torch.library.opcheck(forward, tuple(args))
    if spec.backward_op is not None:
        _, backward = _backend.kernel(spec.backward_op, device)
        torch.library.opcheck(backward, spec.backward_sample(tuple(args), 5))


@pytest.mark.parametrize(("spec", "variant"), CASES, ids=CASE_IDS)
def test_empty_batch(device, spec, variant):
    args = spec.sample((0, 3, 2, 2), device=device, **variant)
    for g, w in zip(_outputs(spec, spec.public, args), _outputs(spec, spec.reference, args),
                    strict=True):  # fmt: skip
        assert g.shape == w.shape and g.numel() == 0


def _implementations(spec, op_name):
    """Every implementation of the raw op: C++ (CPU), fake (on meta tensors), Triton."""
    impls = {
        "native": lambda *a: getattr(torch.ops.cprl_fast, op_name)(*a),
        "fake": lambda *a: getattr(torch.ops.cprl_fast, op_name)(
            *(x.to("meta") if isinstance(x, torch.Tensor) else x for x in a)
        ),
    }
    if HAS_TRITON and INTERPRETED:
        impls["triton"] = lambda *a: getattr(torch.ops.cprl_fast, f"{op_name}_triton")(*a)
    return impls


BAD = [
    pytest.param(spec, bad, id=f"{spec.name}-{bad.what}")
    for spec in SPECS.values()
    for bad in spec.bad_calls
]


@pytest.mark.parametrize(("spec", "bad"), BAD)
def test_error_parity(spec, bad):
    """The C++, fake and Triton kernels refuse a bad call with the same error and message."""
    if HAS_TRITON and INTERPRETED:
        _backend.BACKENDS.get("triton").kernel(spec.name)  # registers the Triton twins
    args = bad.args(spec.sample(spec.shapes[0], seed=4, **spec.variants[0]))
    messages = {}
    for name, impl in _implementations(spec, spec.name).items():
        with pytest.raises(bad.error, match=bad.message) as err:
            impl(*args)
        messages[name] = str(err.value).splitlines()[0]
    assert len(set(messages.values())) == 1, messages


@pytest.mark.parametrize(("spec", "variant"), DIFFERENTIABLE, ids=DIFF_IDS)
def test_backward_checks_its_gradient(spec, variant):
    """A backward op given an output gradient of the wrong dtype refuses it in every
    implementation (C++, fake, Triton) with the same message."""
    if HAS_TRITON and INTERPRETED:
        _backend.BACKENDS.get("triton").kernel(spec.name)
    args = spec.backward_sample(spec.sample(spec.shapes[0], seed=6, **variant), 1)
    bad = (args[0].double(), *args[1:])
    messages = {}
    for name, impl in _implementations(spec, spec.backward_op).items():
        with pytest.raises(TypeError, match="must have the dtype of f") as err:
            impl(*bad)
        messages[name] = str(err.value).splitlines()[0]
    assert len(set(messages.values())) == 1, messages


@pytest.mark.parametrize("spec", list(SPECS.values()), ids=list(SPECS))
def test_spec_names_every_file(spec):
    """A newcomer finds the op's schema, kernels, tests and benchmark from its spec (the shared
    tests here run every spec; the files it names are the op's own)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    generic = {"bench/cases.py"}  # builds every op's cases from its spec
    for role, paths in spec.files.items():
        for path in paths.split(", "):
            text = (root / path).read_text()
            assert path in generic or spec.name in text, f"{role} file {path} lacks {spec.name}"
    assert getattr(ops, spec.name) is spec.public
