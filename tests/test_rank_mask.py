"""rank_mask's own behaviour: ties, NaN and infinity order, the mask formula and the direction
of b, the soft rank's limit, the CA module's b under autocast, the public function's options.
The checks every op shares (reference, dtypes, layouts, gradcheck, opcheck, errors) run from
its spec in tests/test_op_specs.py."""

from __future__ import annotations

import warnings

import pytest
import torch
from op_testing import feature, gradcheck_shape

from cprl_fast import CPRLActivation, ops, reference


def _offset(value: float, dtype: torch.dtype, device) -> torch.Tensor:
    return torch.tensor(value, dtype=dtype, device=device)


def _outputs_and_grads(fn, f, gy, gm, rank: str) -> list[torch.Tensor]:
    """[y, mask, grad_f, grad_b] of ``fn`` (a rank_mask) at ``f`` with b = 0.4, the loss
    ``sum(y * gy) + sum(mask * gm)`` (a None weight leaves that output out of it)."""
    x = f.clone().requires_grad_(True)
    b = _offset(0.4, f.dtype, f.device).requires_grad_(True)
    y, m = fn(x, b, rank=rank, tau=0.3 if rank == "soft" else None, return_mask=True)
    sum(out.mul(w).sum() for out, w in ((y, gy), (m, gm)) if w is not None).backward()
    # the hard rank's mask does not depend on f: the reference leaves no gradient
    return [y, m, torch.zeros_like(f) if x.grad is None else x.grad, b.grad]


class TestRankMaskForward:
    def test_channels_last_output_stays_channels_last(self, device):
        f = feature((2, 8, 4, 5), device=device, layout="channels_last")
        y = ops.rank_mask(f, 0.4)
        assert y.is_contiguous(memory_format=torch.channels_last)

    def test_flat_features(self, device):
        f = feature((5, 11), device=device, seed=7)
        y, m = ops.rank_mask(f, 0.4, return_mask=True)
        y_ref, m_ref = reference.rank_mask(f, 0.4, return_mask=True)
        assert y.shape == (5, 11)
        torch.testing.assert_close(y, y_ref)
        torch.testing.assert_close(m, m_ref)

    # float32 as well as float64: the CUDA and Triton hard ranks sort keys built from the
    # scores' bits, which differ by dtype
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
    def test_ties_rank_stably_by_index(self, device, dtype):
        # Channels 0, 2 and 5 are identical copies: equal scores rank by channel index.
        base = feature((2, 6, 3, 3), dtype=dtype, device=device, seed=11)
        f = base.clone()
        f[:, 2] = f[:, 0]
        f[:, 5] = f[:, 0]
        _, m = ops.rank_mask(f, 0.1, temperature=0.05, return_mask=True)
        _, m_ref = reference.rank_mask(f, 0.1, temperature=0.05, return_mask=True)
        torch.testing.assert_close(m, m_ref)
        # distinct ranks give distinct masks: tied channels differ, later index higher
        assert torch.all(m[:, 0] < m[:, 2]) and torch.all(m[:, 2] < m[:, 5])

    # every block shape of the CUDA hard rank's radix sort (64 x 4, 128 x 8, 256 x 8 and 512 x 8
    # keys) at its limits, and past the last, the bitonic sort in global memory; with a tie.
    # temperature = C keeps every rank's mask apart from its neighbours' (no saturation).
    @pytest.mark.parametrize("C", [1, 256, 257, 1024, 1025, 2048, 2049, 4096, 4097])
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
    def test_every_sort_size_ranks_as_the_reference(self, device_backend, C, dtype):
        device, backend = device_backend
        if C > 256 and backend == "triton" and device.type == "cpu":
            pytest.skip("a CUDA kernel's path; 2-8 s in Triton's interpreter (the GPU runs it)")
        f = feature((2, C, 1, 3), dtype=dtype, device=device, seed=C)
        f[:, -1] = f[:, 0]
        _, m = ops.rank_mask(f, 0.1, temperature=float(C), return_mask=True)
        _, m_ref = reference.rank_mask(f, 0.1, temperature=float(C), return_mask=True)
        torch.testing.assert_close(m, m_ref)

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
    def test_all_channels_equal(self, device, dtype):
        f = torch.ones(2, 7, 2, 2, device=device, dtype=dtype)
        _, m = ops.rank_mask(f, 0.4, return_mask=True)
        r = torch.arange(7, dtype=torch.float64, device=device)
        expected = torch.sigmoid(r - 7 / 2 + 0.4 * 7).expand(2, 7)
        torch.testing.assert_close(m, expected.to(dtype))

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
    def test_signed_zeros_tie(self, device, dtype):
        # -0 and +0 are equal scores (IEEE, and torch.sort): they rank by channel index
        f = feature((1, 6, 2, 2), dtype=dtype, device=device, seed=4)
        f[0, 1], f[0, 4] = 0.0, -0.0
        f[0, 2], f[0, 3] = -0.0, 0.0
        _, m = ops.rank_mask(f, 0.1, return_mask=True)
        _, m_ref = reference.rank_mask(f, 0.1, return_mask=True)
        torch.testing.assert_close(m, m_ref)
        assert m[0, 1] < m[0, 2] < m[0, 3] < m[0, 4]

    def test_mask_formula_and_b_direction(self, device):
        # Channel c has mean c: rank = c, so M = sigmoid(c - C/2 + b*C) exactly (Eq. 7).
        C = 10
        f = (
            torch.arange(C, dtype=torch.float64, device=device)
            .reshape(1, C, 1, 1)
            .expand(2, C, 2, 2)
        )
        for b in (0.0, 0.4, 0.5):
            _, m = ops.rank_mask(f, b, return_mask=True)
            c = torch.arange(C, dtype=torch.float64, device=device)
            torch.testing.assert_close(m[0], torch.sigmoid(c - C / 2 + b * C))
        # b = 0.5 keeps every channel (M > 0.5); b = 0.4 switches the lowest one off
        assert (ops.rank_mask(f, 0.5, return_mask=True)[1] >= 0.5).all()
        assert ops.rank_mask(f, 0.4, return_mask=True)[1][0, 0] < 0.5

    def test_nan_propagates(self, device):
        f = feature((2, 6, 3, 3), device=device, seed=5)
        f[0, 3, 1, 1] = float("nan")
        f[1, 0, 0, 0] = float("nan")
        y, m = ops.rank_mask(f, 0.4, return_mask=True)
        y_ref, m_ref = reference.rank_mask(f, 0.4, return_mask=True)
        assert torch.isnan(y[0, 3, 1, 1]) and torch.isnan(y[1, 0, 0, 0])
        torch.testing.assert_close(y, y_ref, equal_nan=True)
        torch.testing.assert_close(m, m_ref)  # NaN channel ranks last, masks stay finite
        assert torch.isfinite(m).all()

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
    def test_infinities_rank_before_nan(self, device, dtype):
        # sample 1's NaN has its sign bit set: still after +inf (a sort key must not take the
        # sign of a NaN for a negative number's)
        f = feature((2, 5, 1, 1), device=device, seed=9, dtype=dtype)
        f[:, 1] = float("inf")
        f[0, 3] = float("nan")
        f[1, 3] = -torch.tensor(float("nan"), dtype=dtype)
        f[:, 4] = float("-inf")
        assert torch.signbit(f[1, 3]).item() and not torch.signbit(f[0, 3]).item()
        _, m = ops.rank_mask(f, 0.0, return_mask=True)
        _, m_ref = reference.rank_mask(f, 0.0, return_mask=True)
        torch.testing.assert_close(m, m_ref)
        assert (m[:, 4] == m.min(dim=1).values).all() and (m[:, 3] == m.max(dim=1).values).all()


class TestRankMaskBackward:
    def test_gradient_at_nan_elements_matches_the_reference(self, device):
        # torch.relu's backward passes the gradient where its input is NaN; so does the op
        f = feature((2, 5, 3, 3), dtype=torch.float64, device=device, seed=14)
        f[0, 2, 1, 1] = float("nan")
        gy = torch.ones_like(f)
        got, want = (f.clone().requires_grad_(True) for _ in range(2))
        ops.rank_mask(got, 0.4).backward(gy)
        reference.rank_mask(want, 0.4).backward(gy)
        torch.testing.assert_close(got.grad, want.grad, equal_nan=True)
        assert got.grad[0, 2, 1, 1] != 0

    # more (sample, channel) pairs than one block of the Triton backward's epilogue (1024),
    # and more pixels than one split of the Triton reductions of a channels_last map (256):
    # paths that the odd test shapes of tests/test_op_specs.py are too small to reach (both
    # channels_last: an NCHW map's many small programs are slow in Triton's interpreter)
    # (and for CUDA: past 4096 pairs, where the backward's offset gradient takes several
    # blocks and the hard rank's radix sort its largest block shape, and past 4096 channels,
    # where the hard rank is a bitonic sort in global memory)
    @pytest.mark.parametrize("shape", [(5, 210, 2, 3), (2, 6, 17, 17), (3, 2100, 1, 2),
                                       (1, 4100, 1, 1)],
                             ids=["pairs", "pixels", "blocks", "sort-in-memory"])  # fmt: skip
    @pytest.mark.parametrize("rank", ["hard", "soft"])
    def test_larger_maps_match_the_reference(self, device_backend, shape, rank):
        device, backend = device_backend
        if shape[1] > 1024 and backend == "triton" and device.type == "cpu":
            pytest.skip("a CUDA kernel's path; 10 s in Triton's interpreter (the GPU runs it)")
        if shape[1] > 4096 and rank == "soft":
            pytest.skip("the hard rank's path (the soft rank's backward on CUDA takes at most "
                        "3072 float64 channels)")  # fmt: skip
        f = feature(shape, dtype=torch.float64, device=device, seed=31, layout="channels_last")
        gy = feature(shape, dtype=torch.float64, device=device, seed=32)
        gm = feature(shape[:2], dtype=torch.float64, device=device, seed=33)
        got, want = (_outputs_and_grads(fn, f, gy, gm, rank)
                     for fn in (ops.rank_mask, reference.rank_mask))  # fmt: skip
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)

    def test_gradient_of_b_only(self, device):
        f = feature((2, 5, 2, 2), device=device, seed=8, dtype=torch.float64)
        b = _offset(0.4, torch.float64, device).requires_grad_(True)
        assert torch.autograd.gradcheck(lambda b_: ops.rank_mask(f, b_), (b,))

    @pytest.mark.parametrize("used", ["y", "mask"])
    @pytest.mark.parametrize("rank", ["hard", "soft"])
    def test_one_output_used(self, device, used, rank):
        # the other output's gradient never exists (undefined in C++ autograd, zeros from
        # Python's): the backward reads an absent grad_y as zeros and skips an absent grad_mask
        f = feature((2, 6, 3, 3), dtype=torch.float64, device=device, seed=21)
        gy = feature((2, 6, 3, 3), dtype=torch.float64, device=device, seed=22)
        gm = feature((2, 6), dtype=torch.float64, device=device, seed=23)
        got, want = (_outputs_and_grads(fn, f, gy if used == "y" else None,
                                        gm if used == "mask" else None, rank)[2:]
                     for fn in (ops.rank_mask, reference.rank_mask))  # fmt: skip
        torch.testing.assert_close(got, want)

    def test_soft_rank_approaches_hard_rank(self, device):
        f = feature((2, 9, 3, 3), device=device, seed=13, dtype=torch.float64, gap=0.5)
        _, m_hard = ops.rank_mask(f, 0.4, return_mask=True)
        _, m_soft = ops.rank_mask(f, 0.4, rank="soft", tau=1e-3, return_mask=True)
        # a tie counts 1/2, and sigma(0) = 1/2 is excluded by j != c: limits agree exactly
        torch.testing.assert_close(m_soft, m_hard, rtol=0, atol=1e-6)


class TestCAModuleOffset:
    def test_b_is_not_rounded_to_the_feature_dtype(self, monkeypatch):
        # bfloat16 rounds 0.4 to 0.4004, which at C = 2048 moves the threshold by 0.8 ranks;
        # the module passes b unchanged (float32) and the op computes the mask in float32
        seen, original = [], ops.op_for

        def spy_for(name, device):
            op = original(name, device)

            def spy(f, b, *args):
                seen.append(b)
                return op(f, b, *args)

            return spy

        monkeypatch.setattr("cprl_fast.nn.cpr_activation.ops.op_for", spy_for)
        act = CPRLActivation(2048)
        with torch.no_grad():
            act(feature((2, 2048, 2, 2), dtype=torch.bfloat16, seed=3))
        assert seen[0] is act.b and seen[0].dtype == torch.float32


class TestRankMaskErrors:
    def test_bad_rank_name(self):
        with pytest.raises(ValueError, match="rank must be 'hard' or 'soft'"):
            ops.rank_mask(torch.randn(2, 3, 4, 4), 0.4, rank="medium")

    def test_tau_with_hard_rank(self):
        with pytest.raises(ValueError, match="tau applies to rank='soft' only"):
            ops.rank_mask(torch.randn(2, 3, 4, 4), 0.4, tau=0.1)

    def test_not_a_tensor(self):
        with pytest.raises(TypeError, match=r"f must be a torch\.Tensor"):
            ops.rank_mask([[1.0]], 0.4)


class TestAutogradRegistration:
    def test_native_autograd_is_in_cpp(self):
        # csrc/autograd.cpp: no Python autograd.Function on the native op's path
        assert torch._C._dispatch_has_kernel_for_dispatch_key("cprl_fast::rank_mask", "Autograd")
        assert torch._C._dispatch_has_kernel_for_dispatch_key("cprl_fast::intervene", "Autograd")
        f = torch.randn(2, 4, 3, 3, requires_grad=True)
        y = ops.rank_mask(f, 0.4)
        out = ops.intervene(f, f.detach().relu(), torch.rand(2, 4), "sf")
        for tensor in (y, out):
            assert type(tensor.grad_fn).__name__ == "CppFunction"
        assert (y.grad_fn.name(), out.grad_fn.name()) == ("RankMaskBackward", "InterveneBackward")

    def test_saved_tensors_are_version_checked_and_freed(self):
        f = torch.randn(2, 4, 3, 3, requires_grad=True)
        h = f * 1
        y = ops.rank_mask(h, 0.4)
        h.add_(1)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.sum().backward()
        total = ops.intervene(f, f.detach().relu(), torch.rand(2, 4), "nc").sum()
        total.backward()
        with pytest.raises(RuntimeError, match="backward through the graph a second time"):
            total.backward()

    # torch's forward_ad module scripts a helper on import, which torch itself deprecates
    @pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
    def test_forward_mode_ad_is_refused(self):
        import torch.autograd.forward_ad as fwAD

        f = torch.randn(2, 4, 3, 3)
        with fwAD.dual_level():
            dual = fwAD.make_dual(f, torch.ones_like(f))
            with pytest.raises(RuntimeError, match="forward-mode AD is not supported"):
                ops.rank_mask(dual, 0.4)
            with pytest.raises(RuntimeError, match="forward-mode AD is not supported"):
                ops.intervene(dual, f.relu(), torch.rand(2, 4), "sf")

    def test_activation_checkpointing_gives_the_same_gradients(self):
        # non-reentrant checkpointing packs and unpacks every saved tensor through
        # saved_tensors_hooks: the node's SavedVariables must honour them
        from torch.utils.checkpoint import checkpoint

        torch.manual_seed(0)
        act, conv = CPRLActivation(6).double(), torch.nn.Conv2d(6, 6, 3, padding=1).double()
        x = torch.randn(2, 6, 5, 5, dtype=torch.float64, requires_grad=True)

        def block(x):
            return act(conv(x)).square().sum()

        plain = torch.autograd.grad(block(x), [x, act.b])
        again = torch.autograd.grad(checkpoint(block, x, use_reentrant=False), [x, act.b])
        for a, b in zip(plain, again, strict=True):
            torch.testing.assert_close(a, b)

    @pytest.mark.parametrize("soft", [False, True])
    @pytest.mark.parametrize("with_grad_mask", [False, True])
    def test_vjp_is_autograd_through_the_reference(self, soft, with_grad_mask):
        # rank_mask_vjp (the backward under create_graph) written out: the same numbers
        f = feature((3, 7, 4, 5), dtype=torch.float64, seed=31)
        f[1, 2, 0, 0] = float("nan")
        b = torch.tensor([0.35], dtype=torch.float32)
        leaves = [f.clone().requires_grad_(True), b.clone().requires_grad_(True)]
        rank, tau = ("soft", 0.3) if soft else ("hard", None)
        y, mask = reference.rank_mask(*leaves, temperature=0.8, rank=rank, tau=tau,
                                      return_mask=True)  # fmt: skip
        grad_y = feature(y.shape, dtype=y.dtype, seed=32)
        grad_mask = feature(mask.shape, dtype=mask.dtype, seed=33) if with_grad_mask else None
        outs, grads = ((y, mask), (grad_y, grad_mask)) if with_grad_mask else ((y,), (grad_y,))
        want = torch.autograd.grad(outs, leaves, grads)
        got = reference.rank_mask_vjp(grad_y, grad_mask, f, b, 0.8, soft, 0.3)
        for g, w in zip(got, want, strict=True):
            assert g.dtype == w.dtype and g.shape == w.shape
            torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12, equal_nan=True)

    # vmap (jacrev's too) runs a custom op without a batching rule in a loop, and says so
    @pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")
    def test_torch_func_transforms_match_the_reference(self):
        # torch.func.grad runs the backward under create_graph: per-sample gradients (vmap of
        # grad) and a Hessian by jacrev of jacrev, for the normal mode and an intervention
        torch.manual_seed(0)
        act = CPRLActivation(5, rank="soft").double().eval()
        x = torch.randn(3, 5, 2, 3, dtype=torch.float64)
        for mode in ("normal", "sf"):
            act.set_mode(mode)

            def fused(x):
                return act(x[None]).square().sum()

            per_sample = torch.func.vmap(torch.func.grad(fused))(x)
            loop = torch.stack([torch.autograd.grad(fused(xi), xi)[0]
                                for xi in x.clone().requires_grad_(True)])  # fmt: skip
            torch.testing.assert_close(per_sample, loop, rtol=1e-10, atol=1e-10)
            hessian = torch.func.jacrev(torch.func.jacrev(fused))(x[0])
            assert hessian.shape == (5, 2, 3, 5, 2, 3) and hessian.abs().sum() > 0
            if mode == "normal":
                want = torch.func.jacrev(torch.func.jacrev(lambda x: reference.rank_mask(
                    x[None], act.b.detach(), rank="soft").square().sum()))(x[0])  # fmt: skip
                torch.testing.assert_close(hessian, want, rtol=1e-10, atol=1e-10)

    @pytest.mark.parametrize("rank", ["hard", "soft"])
    def test_input_gradient_penalty_matches_reference(self, rank):
        # double backpropagation through a CA layer (the nt objective's penalty): autograd's
        # fallback for the backward op used to warn and return zeros
        torch.manual_seed(0)
        conv = torch.nn.Conv2d(3, 6, 3).double()
        act = CPRLActivation(6, rank=rank).double().eval()
        x = torch.randn(2, 3, 6, 5, dtype=torch.float64, requires_grad=True)

        def penalty(layer):
            (g,) = torch.autograd.grad(layer(conv(x)).square().sum(), x, create_graph=True)
            return torch.autograd.grad(g.square().sum(), [conv.weight, act.b])

        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = penalty(act)  # the ca_activation op, its mask saved, not returned
        want = penalty(lambda f: reference.rank_mask(f, act.b, rank=rank))
        assert all(g.abs().sum() > 0 for g in got)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-9)


class TestCAActivationOp:
    """``cprl_fast::ca_activation``: rank_mask's y alone, the op a CPRLActivation calls in its
    normal mode (one output, the mask saved instead of returned)."""

    @pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided", "permuted"])
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
    @pytest.mark.parametrize("rank", ["hard", "soft"])
    def test_values_and_gradients_are_rank_masks(self, device, layout, dtype, rank):
        soft, tau = rank == "soft", 0.3
        f = feature((3, 7, 5, 4), dtype=dtype, device=device, seed=3, layout=layout)
        b = torch.tensor(0.35, device=device)
        grad = feature((3, 7, 5, 4), dtype=dtype, device=device, seed=4)
        got_in = (f.detach().requires_grad_(), b.detach().requires_grad_())
        want_in = (f.detach().requires_grad_(), b.detach().requires_grad_())
        got = ops.ca_activation_op(*got_in, 0.8, soft, tau)
        want = ops.rank_mask_op(*want_in, 0.8, soft, tau)[0]
        assert got.stride() == want.stride()
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        got.backward(grad)
        want.backward(grad)
        for a, w in zip(got_in, want_in, strict=True):
            torch.testing.assert_close(a.grad, w.grad, rtol=0, atol=0)

    @pytest.mark.parametrize("rank", ["hard", "soft"])
    def test_gradcheck(self, device, rank):
        shape = gradcheck_shape(device, (2, 5, 3, 3))
        f = feature(shape, dtype=torch.float64, device=device, seed=5).requires_grad_()
        b = torch.tensor(0.4, dtype=torch.float64, device=device, requires_grad=True)
        soft = rank == "soft"
        assert torch.autograd.gradcheck(lambda f_, b_: ops.ca_activation_op(f_, b_, 0.7, soft, 0.3),
                                         (f, b))  # fmt: skip

    @pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
    def test_opcheck(self, layout):
        f = feature((2, 6, 3, 4), layout=layout, seed=2).requires_grad_()
        b = torch.tensor(0.35, requires_grad=True)
        for soft in (False, True):
            torch.library.opcheck(torch.ops.cprl_fast.ca_activation.default, (f, b, 0.8, soft, 0.3))

    def test_autograd_node_and_inference_mode(self):
        f = torch.randn(2, 4, 3, 3, requires_grad=True)
        b = torch.tensor(0.4, requires_grad=True)
        y = ops.ca_activation_op(f, b, 1.0, False, 0.1)
        assert y.grad_fn.name() == "RankMaskBackward"
        assert len(y.grad_fn.next_functions) == 2
        with torch.inference_mode():  # below the autograd keys: the composite kernel
            y_inf = ops.ca_activation_op(f, b, 1.0, False, 0.1)
        torch.testing.assert_close(y_inf, y.detach())
        with pytest.raises(ValueError, match="b must be a tensor with one element"):
            ops.ca_activation_op(f, b.repeat(2), 1.0, False, 0.1)

    def test_layer_calls_it_in_the_normal_mode_only(self):
        act = CPRLActivation(4)
        f = torch.randn(2, 4, 3, 3, requires_grad=True)
        assert act(f).grad_fn.name() == "RankMaskBackward"
        act.set_mode("sf")
        assert act(f).grad_fn.name() == "InterveneBackward"

    def test_layer_with_a_parametrized_offset(self):
        from torch.nn.utils import parametrize

        class Half(torch.nn.Module):
            def forward(self, b):
                return b / 2

        act = CPRLActivation(4, b=0.8)
        parametrize.register_parametrization(act, "b", Half())
        f = feature((2, 4, 3, 3), seed=1)
        torch.testing.assert_close(act(f), ops.rank_mask(f, 0.4))


class TestCAActivationEntryPoint:
    """The native backend serves ca_activation with cprl_fast._C.ca_activation, which skips
    torch.ops' boxed path for plain tensors and hands anything else to torch.ops."""

    def _args(self):
        f = feature((2, 4, 3, 3), seed=6).requires_grad_()
        return f, torch.tensor(0.4, requires_grad=True)

    def test_native_route_is_the_direct_entry_point(self):
        from cprl_fast import _C

        assert ops.op_for("ca_activation", torch.device("cpu")) is _C.ca_activation

    def test_torch_function_mode_sees_the_op(self):
        from torch.overrides import TorchFunctionMode

        seen = []

        class Record(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                seen.append(func)
                return func(*args, **(kwargs or {}))

        f, b = self._args()
        with Record():
            y = ops.ca_activation_op(f, b, 1.0, False, 0.1)
        assert torch.ops.cprl_fast.ca_activation.default in seen
        torch.testing.assert_close(y, ops.rank_mask(f, b))

    def test_subclass_goes_through_its_torch_function(self):
        seen = []

        class Logged(torch.Tensor):
            @classmethod
            def __torch_function__(cls, func, types, args=(), kwargs=None):
                seen.append(func)
                return super().__torch_function__(func, types, args, kwargs or {})

        f, b = self._args()
        ops.ca_activation_op(f.detach().as_subclass(Logged), b, 1.0, False, 0.1)
        assert torch.ops.cprl_fast.ca_activation.default in seen

    def test_other_argument_types_and_errors(self):
        f, b = self._args()
        want = ops.rank_mask(f, b)
        torch.testing.assert_close(ops.ca_activation_op(f, b, 1, False, 0.1), want)  # int T
        with pytest.raises(ValueError, match="temperature must be a positive finite number"):
            ops.ca_activation_op(f, b, -1.0, False, 0.1)
        with pytest.raises(TypeError, match="f must be float16, bfloat16"):
            ops.ca_activation_op(f.detach().int(), b, 1.0, False, 0.1)
