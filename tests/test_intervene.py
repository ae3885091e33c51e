"""intervene's own behaviour: what SF and NC keep, flat features, NaN, a float64 mask. The
checks every op shares run from its spec in tests/test_op_specs.py."""

from __future__ import annotations

import torch

from cprl_fast import ops, reference
from cprl_fast.ops.intervene import SPEC


def _inputs(shape, device, seed):
    """(f, t, mask) as the spec samples them: t non-negative (an FC output), mask in [0, 1]."""
    return SPEC.sample(shape, device=device, seed=seed)[:3]


class TestInterveneForward:
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
    def test_gradient_at_nan_elements_matches_the_reference(self, device):
        f, t, mask = _inputs((2, 4, 2, 2), device, 21)
        f[1, 3, 0, 1] = float("nan")
        for mode in ("sf", "nc"):
            got = [v.clone().requires_grad_(True) for v in (f, t)]
            want = [v.clone().requires_grad_(True) for v in (f, t)]
            ops.intervene(*got, mask, mode).sum().backward()
            reference.intervene(*want, mask, mode).sum().backward()
            for g, w in zip(got, want, strict=True):
                torch.testing.assert_close(g.grad, w.grad, equal_nan=True)
            assert got[0].grad[1, 3, 0, 1] != 0

    def test_mask_in_float64_with_float32_features(self, device):
        f, t, mask = _inputs((2, 5, 3, 2), device, 19)
        mask64 = mask.double().requires_grad_(True)
        ops.intervene(f, t, mask64, "nc").sum().backward()
        assert mask64.grad.dtype == torch.float64 and mask64.grad.shape == (2, 5)

    def test_a_channels_last_map_of_several_splits_matches_the_reference(self, device):
        # more pixels than one split of the Triton reductions of a channels_last map (256): the
        # mask's gradient adds the splits' partial sums, which the spec's odd shapes never reach
        f, t, mask = SPEC.sample((2, 6, 17, 17), dtype=torch.float64, device=device, seed=23,
                                 layout="channels_last")[:3]  # fmt: skip
        weight = torch.linspace(-1, 1, f.numel(), dtype=f.dtype, device=device).reshape(f.shape)
        for mode in ("sf", "nc"):
            grads = []
            for fn in (ops.intervene, reference.intervene):
                leaves = [v.clone().requires_grad_(True) for v in (f, t, mask)]
                fn(*leaves, mode).mul(weight).sum().backward()
                grads.append([v.grad for v in leaves])
            torch.testing.assert_close(grads[0], grads[1], rtol=1e-9, atol=1e-9)


def test_vjp_is_autograd_through_the_reference():
    # intervene_vjp (the backward under create_graph) written out: the same numbers, NaN too
    f, t, mask = SPEC.sample((2, 5, 3, 4), dtype=torch.float64, seed=29)[:3]
    f[0, 1, 2, 0] = float("nan")
    for mode in ("sf", "nc"):
        leaves = [v.clone().requires_grad_(True) for v in (f, t, mask)]
        out = reference.intervene(*leaves, mode)
        grad = torch.randn_like(out)
        want = torch.autograd.grad(out, leaves, grad)
        got = reference.intervene_vjp(grad, f, t, mask, mode)
        for g, w in zip(got, want, strict=True):
            assert g.dtype == w.dtype
            torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12, equal_nan=True)
