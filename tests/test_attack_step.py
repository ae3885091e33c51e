"""attack_step's own behaviour: bit-exact over budgets, invariants, sign(0) and NaN, the
out and in-place forms, random starts. The checks every op shares run from its spec in
tests/test_op_specs.py."""

from __future__ import annotations

import pytest
import torch
from op_testing import LAYOUTS, in_layout, seed_of

from cprl_fast import ops, reference
from cprl_fast.ops import _backend


def _inputs(shape, device, seed, layout="contiguous", dtype=torch.float32, zeros=True):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(shape, generator=g, dtype=torch.float64)
    x = (x0 + (torch.rand(shape, generator=g, dtype=torch.float64) - 0.5) * 0.02).clamp(0, 1)
    grad = torch.randn(shape, generator=g, dtype=torch.float64)
    if zeros:
        grad[grad.abs() < 0.2] = 0.0  # sign(0) = 0: those pixels stay put
    return tuple(in_layout(v.to(dtype=dtype, device=device), layout) for v in (x, grad, x0))


class TestAttackStep:
    @pytest.mark.parametrize("layout", LAYOUTS)
    def test_bit_exact_over_budgets(self, device, layout):
        shape = (2, 3, 17, 9)
        x, g, x0 = _inputs(shape, device, seed_of(shape, layout), layout)
        for alpha, eps in [(1 / 255, 2 / 255), (0.5 / 255, 1 / 255), (0.1, 0.03)]:
            out = ops.attack_step(x, g, x0, alpha, eps)
            torch.testing.assert_close(
                out, reference.attack_step(x, g, x0, alpha, eps), rtol=0, atol=0
            )

    def test_any_rank(self, device):
        x, g, x0 = (v.reshape(-1) for v in _inputs((2, 3, 5, 7), device, 4))
        torch.testing.assert_close(
            ops.attack_step(x, g, x0, 0.01, 0.02), reference.attack_step(x, g, x0, 0.01, 0.02)
        )

    def test_invariants(self, device):
        x, g, x0 = _inputs((4, 3, 16, 16), device, 5)
        eps = 3 / 255
        for _ in range(5):
            x = ops.attack_step(x, g, x0, 2 / 255, eps)
            g = torch.randn_like(g)
        assert (x - x0).abs().max() <= eps + 1e-7
        assert x.min() >= 0 and x.max() <= 1

    def test_sign_zero_and_nan(self, device):
        x, g, x0 = _inputs((1, 1, 2, 3), device, 6, zeros=False)
        g = g.clone()
        g[0, 0, 0, 0] = 0.0
        g[0, 0, 0, 1] = float("nan")
        x0 = x0.clone()
        x0[0, 0, 1, 2] = float("nan")
        x = x0.clone()
        out = ops.attack_step(x, g, x0, 0.1, 0.2)
        torch.testing.assert_close(out, reference.attack_step(x, g, x0, 0.1, 0.2), equal_nan=True)
        assert out[0, 0, 0, 0] == x[0, 0, 0, 0] and out[0, 0, 0, 1] == x[0, 0, 0, 1]
        assert torch.isnan(out[0, 0, 1, 2])

    @pytest.mark.parametrize("layout", LAYOUTS)
    def test_in_place(self, device, layout):
        x, g, x0 = _inputs((2, 3, 6, 5), device, 7, layout)
        want = reference.attack_step(x, g, x0, 0.01, 0.02)
        storage = x.data_ptr()
        got = ops.attack_step_(x, g, x0, 0.01, 0.02)
        assert got is x and x.data_ptr() == storage
        torch.testing.assert_close(x, want, rtol=0, atol=0)

    def test_out(self, device):
        x, g, x0 = _inputs((2, 3, 6, 5), device, 8)
        out = torch.full_like(x, -1.0)
        res = ops.attack_step(x, g, x0, 0.01, 0.02, out=out)
        assert res is out
        torch.testing.assert_close(out, reference.attack_step(x, g, x0, 0.01, 0.02), rtol=0, atol=0)

    def test_inputs_that_require_grad(self, device):
        x, g, x0 = _inputs((1, 3, 4, 4), device, 9)
        out = ops.attack_step(x.requires_grad_(True), g, x0, 0.01, 0.02)
        assert not out.requires_grad

    def test_opcheck_out(self, device_backend):
        device, backend = device_backend
        if backend == "triton" and device.type == "cpu":
            pytest.skip("triton_op fails opcheck's fake check under the interpreter")
        for layout in ("contiguous", "channels_last"):
            x, g, x0 = _inputs((2, 3, 5, 4), device, 10, layout)
            args = (x, g, x0, 0.01, 0.02, 0.0, 1.0, torch.empty_like(x))
            torch.library.opcheck(_backend.kernel("attack_step_out", device)[1], args)


class TestRandomStart:
    def test_reproducible_with_generator(self):
        x = torch.rand(2, 3, 8, 8)
        a = ops.random_start(x, 8 / 255, generator=torch.Generator().manual_seed(1))
        b = ops.random_start(x, 8 / 255, generator=torch.Generator().manual_seed(1))
        c = ops.random_start(x, 8 / 255, generator=torch.Generator().manual_seed(2))
        assert torch.equal(a, b) and not torch.equal(a, c)

    def test_inside_ball_and_range(self):
        x = torch.rand(4, 3, 16, 16)
        eps = 8 / 255
        x1 = ops.random_start(x, eps, generator=torch.Generator().manual_seed(3))
        assert (x1 - x).abs().max() <= eps + 1e-7 and x1.min() >= 0 and x1.max() <= 1
        assert (x1 - x).abs().mean() > eps / 4  # it moved: uniform noise has mean |u| = eps/2

    def test_a_cpu_generator_serves_any_device(self):
        """The evaluations pass their seeded CPU generator to the attacks on every device: the
        noise is drawn on the CPU and copied (here to the meta device; on a GPU the test below
        checks the values)."""
        x = torch.rand(2, 3, 4, 5, device="meta").to(memory_format=torch.channels_last)
        out = ops.random_start(x, 0.1, generator=torch.Generator().manual_seed(0))
        assert out.device.type == "meta" and out.shape == x.shape
        assert out.is_contiguous(memory_format=torch.channels_last)

    def test_cuda_x_with_a_cpu_generator_starts_where_the_cpu_does(self):
        if not torch.cuda.is_available():
            pytest.skip("needs a GPU")
        x = torch.rand(2, 3, 8, 8)
        want = ops.random_start(x, 0.1, generator=torch.Generator().manual_seed(5))
        got = ops.random_start(x.cuda(), 0.1, generator=torch.Generator().manual_seed(5))
        torch.testing.assert_close(got.cpu(), want, rtol=0, atol=1e-7)

    def test_cuda_generator_for_a_cpu_x_is_refused(self):
        if not torch.cuda.is_available():
            pytest.skip("needs a GPU to make a CUDA generator")
        with pytest.raises(ValueError, match=r"must be on the device of x \(cpu\) or on the CPU"):
            ops.random_start(torch.rand(2), 0.1, generator=torch.Generator(device="cuda"))


class TestAttackStepErrors:
    def test_out_overlapping_an_input_in_part_is_refused(self):
        buf = torch.rand(20)
        x, x0, g = buf[:10], torch.rand(10), torch.randn(10)
        with pytest.raises(RuntimeError, match="refer to a single memory location"):
            ops.attack_step(x, g, x0, 0.1, 0.1, out=buf[5:15])  # shifted by 5 elements
        expanded = torch.zeros(1).expand(10)  # one element written ten times
        with pytest.raises(RuntimeError, match="single memory location"):
            ops.attack_step(x, g, x0, 0.1, 0.1, out=expanded)

    def test_out_check_while_tracing_reads_no_memory(self):
        """The out= check runs inside the Triton op's body while torch.compile / opcheck trace
        it, on functional tensors without memory; it must skip the memory comparison there (the
        first GPU run found opcheck's aot_dispatch test failing on ``data_ptr``)."""
        from torch._subclasses.functional_tensor import FunctionalTensor, FunctionalTensorMode

        from cprl_fast.checks import check_out

        x, g, x0 = torch.rand(2, 3), torch.randn(2, 3), torch.rand(2, 3)
        with FunctionalTensorMode():
            out = FunctionalTensor.to_functional(torch.empty(2, 3))
            check_out(x, g, x0, out)
            with pytest.raises(ValueError, match="out must have the shape of x"):
                check_out(x, g, x0, FunctionalTensor.to_functional(torch.empty(3, 2)))

    def test_in_place_on_a_leaf_that_requires_grad_is_refused(self):
        x = torch.rand(2, 3, requires_grad=True)
        with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
            ops.attack_step_(x, torch.randn(2, 3), x.detach(), 0.1, 0.1)

    def test_out_of_wrong_shape(self):
        x = torch.rand(2, 3)
        with pytest.raises(ValueError, match="out must have the shape of x"):
            ops.attack_step(x, x, x, 0.1, 0.1, out=torch.empty(3, 2))
