"""rank_mask: every backend against the reference, gradients, opcheck, compile, errors."""

from __future__ import annotations

import pytest
import torch
from op_testing import LAYOUTS, feature, grads, like, seed_of, tol

from cprl_fast import ops, reference

SHAPES = [(2, 5, 3, 7), (3, 1, 4, 4), (1, 2, 1, 1), (4, 33, 1, 1), (2, 64, 9, 5), (2, 2048, 2, 3)]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _offset(value: float, dtype: torch.dtype, device) -> torch.Tensor:
    return torch.tensor(value, dtype=dtype, device=device)


def _check_dtypes(device, dtype):
    if device.type == "cpu" and dtype == torch.float16 and not torch.backends.mkldnn.is_available():
        pytest.skip("float16 reference needs CPU half support")


class TestRankMaskForward:
    @pytest.mark.parametrize("shape", SHAPES, ids=str)
    @pytest.mark.parametrize("layout", LAYOUTS)
    @pytest.mark.parametrize("rank", ["hard", "soft"])
    def test_matches_reference(self, device, shape, layout, rank):
        seed = seed_of((shape, layout, rank)) % 10_000
        f = feature(shape, device=device, seed=seed, layout=layout)
        b = _offset(0.4, torch.float32, device)
        tau = 0.3 if rank == "soft" else None
        y, m = ops.rank_mask(f, b, rank=rank, tau=tau, return_mask=True)
        y_ref, m_ref = reference.rank_mask(f, b, rank=rank, tau=tau, return_mask=True)
        # the soft rank sums C - 1 sigmoids in float32: allow for the order of that sum
        close = tol(torch.float32) if rank == "hard" else {"rtol": 1e-4, "atol": 5e-5}
        torch.testing.assert_close(m, m_ref, **close)
        torch.testing.assert_close(y, y_ref, **close)
        assert y.shape == f.shape and y.dtype == f.dtype and m.shape == f.shape[:2]

    @pytest.mark.parametrize("dtype", DTYPES, ids=str)
    @pytest.mark.parametrize("seed", [1, 2, 3])
    def test_dtypes(self, device, dtype, seed):
        _check_dtypes(device, dtype)
        f = feature((3, 24, 5, 6), dtype=dtype, device=device, seed=seed)
        b = _offset(0.3, torch.float32, device)
        y, m = ops.rank_mask(f, b, temperature=0.7, return_mask=True)
        y_ref, m_ref = reference.rank_mask(f, b, temperature=0.7, return_mask=True)
        assert y.dtype == dtype
        assert m.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
        torch.testing.assert_close(m, m_ref, **tol(m.dtype))
        torch.testing.assert_close(y, y_ref, **tol(dtype))

    def test_channels_last_output_stays_channels_last(self, device):
        f = feature((2, 8, 4, 5), device=device, layout="channels_last")
        y = ops.rank_mask(f, 0.4)
        assert y.is_contiguous(memory_format=torch.channels_last)

    def test_empty_batch(self, device):
        f = torch.empty(0, 6, 3, 3, device=device)
        y, m = ops.rank_mask(f, 0.4, return_mask=True)
        assert y.shape == (0, 6, 3, 3) and m.shape == (0, 6)

    def test_flat_features(self, device):
        f = feature((5, 11), device=device, seed=7)
        y, m = ops.rank_mask(f, 0.4, return_mask=True)
        y_ref, m_ref = reference.rank_mask(f, 0.4, return_mask=True)
        assert y.shape == (5, 11)
        torch.testing.assert_close(y, y_ref)
        torch.testing.assert_close(m, m_ref)

    def test_ties_rank_stably_by_index(self, device):
        # Channels 0, 2 and 5 are identical copies: equal scores rank by channel index.
        base = feature((2, 6, 3, 3), dtype=torch.float64, device=device, seed=11)
        f = base.clone()
        f[:, 2] = f[:, 0]
        f[:, 5] = f[:, 0]
        _, m = ops.rank_mask(f, 0.1, temperature=0.05, return_mask=True)
        _, m_ref = reference.rank_mask(f, 0.1, temperature=0.05, return_mask=True)
        torch.testing.assert_close(m, m_ref)
        # distinct ranks give distinct masks: tied channels differ, later index higher
        assert torch.all(m[:, 0] < m[:, 2]) and torch.all(m[:, 2] < m[:, 5])

    def test_all_channels_equal(self, device):
        f = torch.ones(2, 7, 2, 2, device=device, dtype=torch.float64)
        _, m = ops.rank_mask(f, 0.4, return_mask=True)
        r = torch.arange(7, dtype=torch.float64, device=device)
        expected = torch.sigmoid(r - 7 / 2 + 0.4 * 7).expand(2, 7)
        torch.testing.assert_close(m, expected)

    def test_mask_formula_and_b_direction(self, device):
        # Channel c has mean c: rank = c, so M = sigmoid(c - C/2 + b*C) exactly (SPEC Eq. 7).
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

    def test_infinities_rank_before_nan(self, device):
        f = feature((1, 5, 1, 1), device=device, seed=9, dtype=torch.float64)
        f[0, 1] = float("inf")
        f[0, 3] = float("nan")
        f[0, 4] = float("-inf")
        _, m = ops.rank_mask(f, 0.0, return_mask=True)
        _, m_ref = reference.rank_mask(f, 0.0, return_mask=True)
        torch.testing.assert_close(m, m_ref)
        assert m[0, 4] == m.min() and m[0, 3] == m.max()


class TestRankMaskBackward:
    @pytest.mark.parametrize("layout", LAYOUTS)
    @pytest.mark.parametrize("rank", ["hard", "soft"])
    @pytest.mark.parametrize("shape", [(2, 7, 3, 5), (3, 40, 1, 1), (1, 1, 4, 4)], ids=str)
    def test_grads_match_reference(self, device, layout, rank, shape):
        seed = seed_of((layout, rank, shape)) % 10_000
        f = feature(shape, device=device, seed=seed, layout=layout, dtype=torch.float64)
        b = _offset(0.35, torch.float64, device)
        gy = like(f, seed + 1)
        gm = like(torch.empty(shape[:2], dtype=torch.float64, device=device), seed + 2)
        tau = 0.5 if rank == "soft" else None

        def run(impl):
            return grads(
                lambda f_, b_: impl(f_, b_, temperature=0.8, rank=rank, tau=tau, return_mask=True),
                [f, b],
                (gy, gm),
            )

        (_y, _m), (df, db) = run(ops.rank_mask)
        (_y_ref, _m_ref), (df_ref, db_ref) = run(reference.rank_mask)
        torch.testing.assert_close(df, df_ref, **tol(torch.float64))
        torch.testing.assert_close(db, db_ref, rtol=1e-9, atol=1e-9)
        assert db.shape == b.shape

    @pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
    def test_low_precision_grads(self, device, dtype):
        _check_dtypes(device, dtype)
        f = feature((2, 16, 4, 4), device=device, seed=3, dtype=dtype)
        b = _offset(0.4, torch.float32, device)
        gy = like(f, 4)
        (_, (df, db)) = grads(lambda f_, b_: ops.rank_mask(f_, b_), [f, b], (gy,))
        (_, (df_ref, db_ref)) = grads(lambda f_, b_: reference.rank_mask(f_, b_), [f, b], (gy,))
        assert df.dtype == dtype
        torch.testing.assert_close(df, df_ref, **tol(dtype))
        torch.testing.assert_close(
            db, db_ref, rtol=1e-2 if dtype != torch.float32 else 1e-4, atol=1e-2
        )

    @pytest.mark.parametrize("rank", ["hard", "soft"])
    @pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
    def test_gradcheck(self, device, rank, layout):
        f = feature((2, 6, 3, 2), device=device, seed=21, layout=layout, dtype=torch.float64)
        f.requires_grad_(True)
        b = _offset(0.3, torch.float64, device).requires_grad_(True)
        tau = 0.4 if rank == "soft" else None

        def fn(f_, b_):
            return ops.rank_mask(f_, b_, temperature=0.9, rank=rank, tau=tau, return_mask=True)

        assert torch.autograd.gradcheck(fn, (f, b), eps=1e-6, atol=1e-6)

    def test_gradient_of_b_only(self, device):
        f = feature((2, 5, 2, 2), device=device, seed=8, dtype=torch.float64)
        b = _offset(0.4, torch.float64, device).requires_grad_(True)
        assert torch.autograd.gradcheck(lambda b_: ops.rank_mask(f, b_), (b,))

    def test_soft_rank_approaches_hard_rank(self, device):
        f = feature((2, 9, 3, 3), device=device, seed=13, dtype=torch.float64, gap=0.5)
        _, m_hard = ops.rank_mask(f, 0.4, return_mask=True)
        _, m_soft = ops.rank_mask(f, 0.4, rank="soft", tau=1e-3, return_mask=True)
        # a tie counts 1/2, and sigma(0) = 1/2 is excluded by j != c: limits agree exactly
        torch.testing.assert_close(m_soft, m_hard, rtol=0, atol=1e-6)


class TestRankMaskOpcheck:
    @pytest.mark.parametrize("soft", [False, True])
    @pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
    def test_opcheck(self, device_backend, soft, layout):
        device, backend = device_backend
        if backend == "triton" and device.type == "cpu":
            pytest.skip("triton_op fails opcheck's fake check under the interpreter")
        f = feature((2, 6, 3, 4), device=device, seed=2, layout=layout).requires_grad_(True)
        b = _offset(0.4, torch.float32, device).requires_grad_(True)
        from cprl_fast.ops import _backend

        op = _backend.op("rank_mask", f)
        torch.library.opcheck(op, (f, b, 1.0, soft, 0.2))
        gy = like(f, 3)
        mask = torch.rand(2, 6, device=device)
        bop = _backend.op("rank_mask_backward", f)
        torch.library.opcheck(bop, (gy, None, f.detach(), mask, b.detach(), 1.0, soft, 0.2))
        torch.library.opcheck(bop, (gy, mask, f.detach(), mask, b.detach(), 1.0, soft, 0.2))


class TestRankMaskErrors:
    def test_wrong_rank(self):
        with pytest.raises(ValueError, match=r"f must have shape \[N, C, H, W\]"):
            ops.rank_mask(torch.randn(2, 3, 4), 0.4)

    def test_wrong_dtype(self):
        with pytest.raises(TypeError, match="f must be float16, bfloat16, float32 or float64"):
            ops.rank_mask(torch.ones(2, 3, 4, 4, dtype=torch.int32), 0.4)

    def test_zero_channels(self):
        with pytest.raises(ValueError, match="C, H, W >= 1"):
            ops.rank_mask(torch.randn(2, 0, 4, 4), 0.4)

    def test_bad_b(self):
        with pytest.raises(ValueError, match="b must be a tensor with one element"):
            ops.rank_mask(torch.randn(2, 3, 4, 4), torch.zeros(2))

    def test_bad_rank_name(self):
        with pytest.raises(ValueError, match="rank must be 'hard' or 'soft'"):
            ops.rank_mask(torch.randn(2, 3, 4, 4), 0.4, rank="medium")

    def test_tau_with_hard_rank(self):
        with pytest.raises(ValueError, match="tau applies to rank='soft' only"):
            ops.rank_mask(torch.randn(2, 3, 4, 4), 0.4, tau=0.1)

    @pytest.mark.parametrize("temperature", [0.0, -1.0, float("inf")])
    def test_bad_temperature(self, temperature):
        with pytest.raises(ValueError, match="temperature must be a positive finite number"):
            ops.rank_mask(torch.randn(2, 3, 4, 4), 0.4, temperature=temperature)

    def test_bad_tau(self):
        with pytest.raises(ValueError, match="tau must be a positive finite number"):
            ops.rank_mask(torch.randn(2, 3, 4, 4), 0.4, rank="soft", tau=0.0)

    def test_direct_op_call_checks_too(self):
        with pytest.raises(ValueError, match=r"f must have shape \[N, C, H, W\]"):
            torch.ops.cprl_fast.rank_mask(torch.randn(2, 3), torch.tensor(0.4), 1.0, False, 0.1)

    def test_not_a_tensor(self):
        with pytest.raises(TypeError, match=r"f must be a torch\.Tensor"):
            ops.rank_mask([[1.0]], 0.4)
