"""intervene: every backend against the reference, gradients, opcheck, errors."""

from __future__ import annotations

import pytest
import torch
from op_testing import LAYOUTS, feature, grads, in_layout, like, seed_of, tol

from cprl_fast import ops, reference
from cprl_fast.ops import _backend

SHAPES = [(2, 5, 3, 7), (3, 1, 4, 4), (1, 2, 1, 1), (2, 64, 9, 5), (2, 2048, 1, 2)]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _inputs(shape, device, seed, layout="contiguous", dtype=torch.float32):
    f = feature(shape, device=device, seed=seed, layout=layout, dtype=dtype)
    t = in_layout(like(f.contiguous(), seed + 1).relu(), layout)  # FC output: non-negative
    g = torch.Generator().manual_seed(seed + 2)
    mask = torch.rand(shape[:2], generator=g, dtype=torch.float64).to(device)
    return f, t, mask.to(torch.float64 if dtype == torch.float64 else torch.float32)


class TestInterveneForward:
    @pytest.mark.parametrize("shape", SHAPES, ids=str)
    @pytest.mark.parametrize("layout", LAYOUTS)
    @pytest.mark.parametrize("mode", ["sf", "nc"])
    def test_matches_reference(self, device, shape, layout, mode):
        f, t, mask = _inputs(shape, device, seed_of(shape, layout, mode), layout)
        out = ops.intervene(f, t, mask, mode)
        torch.testing.assert_close(out, reference.intervene(f, t, mask, mode), **tol(f.dtype))
        assert out.shape == f.shape and out.dtype == f.dtype

    @pytest.mark.parametrize("dtype", DTYPES, ids=str)
    @pytest.mark.parametrize("mode", ["sf", "nc"])
    def test_dtypes(self, device, dtype, mode):
        f, t, mask = _inputs((2, 12, 5, 3), device, 5, dtype=dtype)
        out = ops.intervene(f, t, mask, mode)
        assert out.dtype == dtype
        torch.testing.assert_close(out, reference.intervene(f, t, mask, mode), **tol(dtype))

    def test_sf_keeps_masked_in_part_and_nc_the_rest(self, device):
        # With a 0/1 mask: SF is f on the masked-in channels and t elsewhere; NC the opposite.
        f, t, _ = _inputs((2, 6, 3, 3), device, 9)
        mask = torch.tensor(
            [[1, 0, 1, 0, 1, 1], [0, 0, 1, 1, 0, 1]], dtype=torch.float32, device=device
        )
        keep = mask.bool()[:, :, None, None].expand_as(f)
        sf = ops.intervene(f, t, mask, "sf")
        nc = ops.intervene(f, t, mask, "nc")
        assert torch.equal(sf[keep], f.relu()[keep]) and torch.equal(sf[~keep], t.relu()[~keep])
        assert torch.equal(nc[~keep], f.relu()[~keep]) and torch.equal(nc[keep], t.relu()[keep])

    def test_empty_batch(self, device):
        f = torch.empty(0, 3, 2, 2, device=device)
        assert ops.intervene(f, f, torch.empty(0, 3, device=device), "sf").shape == f.shape

    def test_flat_features(self, device):
        f, t, mask = _inputs((4, 9, 1, 1), device, 3)
        out = ops.intervene(f[:, :, 0, 0], t[:, :, 0, 0], mask, "nc")
        torch.testing.assert_close(out, reference.intervene(f, t, mask, "nc")[:, :, 0, 0])

    def test_nan_propagates(self, device):
        f, t, mask = _inputs((2, 4, 2, 2), device, 4)
        f[0, 1, 0, 0] = float("nan")
        mask[1, 2] = 1.0
        out = ops.intervene(f, t, mask, "sf")
        torch.testing.assert_close(out, reference.intervene(f, t, mask, "sf"), equal_nan=True)
        assert torch.isnan(out[0, 1, 0, 0])


class TestInterveneBackward:
    @pytest.mark.parametrize("layout", LAYOUTS)
    @pytest.mark.parametrize("mode", ["sf", "nc"])
    @pytest.mark.parametrize("shape", [(2, 7, 3, 5), (3, 40, 1, 1), (1, 1, 4, 4)], ids=str)
    def test_grads_match_reference(self, device, layout, mode, shape):
        seed = seed_of(layout, mode, shape)
        f, t, mask = _inputs(shape, device, seed, layout, torch.float64)
        g = like(f, seed + 7)
        _, got = grads(lambda *a: ops.intervene(*a, mode), [f, t, mask], (g,))
        _, want = grads(lambda *a: reference.intervene(*a, mode), [f, t, mask], (g,))
        for name, a, b in zip(("f", "t", "mask"), got, want, strict=False):
            torch.testing.assert_close(
                a, b, **tol(torch.float64), msg=lambda m, n=name: f"{n}: {m}"
            )

    @pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
    def test_low_precision_grads(self, device, dtype):
        f, t, mask = _inputs((2, 16, 4, 4), device, 6, dtype=dtype)
        g = like(f, 8)
        _, got = grads(lambda *a: ops.intervene(*a, "sf"), [f, t, mask], (g,))
        _, want = grads(lambda *a: reference.intervene(*a, "sf"), [f, t, mask], (g,))
        torch.testing.assert_close(got[0], want[0], **tol(dtype))
        torch.testing.assert_close(got[1], want[1], **tol(dtype))
        torch.testing.assert_close(
            got[2], want[2], rtol=1e-2, atol=1e-2 if dtype != torch.float32 else 1e-4
        )

    @pytest.mark.parametrize("mode", ["sf", "nc"])
    @pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
    def test_gradcheck(self, device, mode, layout):
        f, t, mask = _inputs((2, 5, 3, 2), device, 17, layout, torch.float64)
        inputs = tuple(x.requires_grad_(True) for x in (f, t, mask))
        assert torch.autograd.gradcheck(lambda *a: ops.intervene(*a, mode), inputs)

    def test_mask_in_float64_with_float32_features(self, device):
        f, t, mask = _inputs((2, 5, 3, 2), device, 19)
        mask64 = mask.double().requires_grad_(True)
        ops.intervene(f, t, mask64, "nc").sum().backward()
        assert mask64.grad.dtype == torch.float64 and mask64.grad.shape == (2, 5)


class TestInterveneOpcheck:
    @pytest.mark.parametrize("mode", ["sf", "nc"])
    @pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
    def test_opcheck(self, device_backend, mode, layout):
        device, backend = device_backend
        if backend == "triton" and device.type == "cpu":
            pytest.skip("triton_op fails opcheck's fake check under the interpreter")
        f, t, mask = _inputs((2, 6, 3, 4), device, 2, layout)
        args = (f.requires_grad_(True), t.requires_grad_(True), mask.requires_grad_(True), mode)
        torch.library.opcheck(_backend.op("intervene", f), args)
        g = like(f.detach(), 3)
        bargs = (g, f.detach(), t.detach(), mask.detach(), mode)
        torch.library.opcheck(_backend.op("intervene_backward", f), bargs)


class TestInterveneErrors:
    def test_shape_mismatch(self):
        f = torch.randn(2, 3, 4, 4)
        with pytest.raises(ValueError, match=r"t must have the shape of f \[2, 3, 4, 4\]"):
            ops.intervene(f, torch.randn(2, 3, 4, 5), torch.rand(2, 3), "sf")

    def test_dtype_mismatch(self):
        f = torch.randn(2, 3, 4, 4)
        with pytest.raises(TypeError, match="t must have the dtype of f"):
            ops.intervene(f, f.double(), torch.rand(2, 3), "sf")

    def test_bad_mask_shape(self):
        f = torch.randn(2, 3, 4, 4)
        with pytest.raises(ValueError, match=r"mask must have shape \[N, C\] = \[2, 3\]"):
            ops.intervene(f, f, torch.rand(2, 3, 1, 1), "sf")

    def test_bad_mode(self):
        f = torch.randn(2, 3, 4, 4)
        with pytest.raises(ValueError, match="mode must be 'sf' or 'nc'"):
            ops.intervene(f, f, torch.rand(2, 3), "normal")

    def test_bad_mode_direct_op(self):
        f = torch.randn(2, 3, 4, 4)
        with pytest.raises(ValueError, match="mode must be 'sf' or 'nc'"):
            torch.ops.cprl_fast.intervene(f, f, torch.rand(2, 3), "xx")

    def test_integer_mask(self):
        f = torch.randn(2, 3, 4, 4)
        with pytest.raises(TypeError, match="mask must be float16, bfloat16, float32 or float64"):
            ops.intervene(f, f, torch.ones(2, 3, dtype=torch.long), "sf")
