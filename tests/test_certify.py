"""Certified intervals by median smoothing: the analytic bounds of a model whose noisy score
is known in closed form, no attack within the radius leaving an interval, the binomial order
statistics, and the certified SRCC bound against brute force over every ranking the intervals
allow."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from cprl_fast import metrics
from cprl_fast.certify import certified_srcc, certify, order_statistics, smoothed_metrics


class MeanPixel(nn.Module):
    """f(x) = mean pixel: f(x + delta) ~ N(f(x), sigma^2 / d), so the smoothed score is f(x)
    and the worst change within L2 radius r is exactly r / sqrt(d)."""

    def forward(self, x):
        return x.mean(dim=(1, 2, 3))


def test_intervals_match_the_analytic_median_bounds():
    g = torch.Generator().manual_seed(0)
    x = 0.25 + 0.5 * torch.rand(12, 3, 8, 8, generator=g)
    sigma, radii, d = 0.5, np.array([0.0, 0.25, 0.5, 1.0]), 3 * 8 * 8
    cert = certify(MeanPixel(), x, sigma, n=2000, radius=radii, score_range=None,
                   progress=False)  # fmt: skip
    m, spread = x.mean(dim=(1, 2, 3)).numpy(), sigma / np.sqrt(d)
    exact_lo, exact_hi = m - radii[:, None] / np.sqrt(d), m + radii[:, None] / np.sqrt(d)
    assert np.all(cert.lower <= exact_lo) and np.all(cert.upper >= exact_hi)
    # each end sits where its order statistic is expected (4 standard deviations of it)
    for k, (k_lo, k_hi) in enumerate(cert.info["order_statistics"]):
        where_lo = m + spread * stats.norm.ppf(k_lo / (2000 + 1))
        where_hi = m + spread * stats.norm.ppf(k_hi / (2000 + 1))
        assert np.all(np.abs(cert.lower[k] - where_lo) < 0.35 * spread)
        assert np.all(np.abs(cert.upper[k] - where_hi) < 0.35 * spread)
    assert np.abs(cert.median - m).max() < 0.15 * spread
    again = certify(MeanPixel(), x, sigma, n=2000, radius=radii, score_range=None, progress=False)
    assert np.array_equal(again.lower, cert.lower)  # deterministic given the seed


def test_order_statistics_are_the_exact_binomial_bounds():
    n, alpha, sigma = 500, 0.01, 0.25
    for r in (0.0, 0.1, 0.3):
        k_lo, k_hi = order_statistics(n, alpha, r, sigma)
        p_lo, p_hi = stats.norm.cdf(-r / sigma), stats.norm.cdf(r / sigma)
        assert stats.binom.cdf(k_lo - 1, n, p_lo) <= alpha / 2 < stats.binom.cdf(k_lo, n, p_lo)
        assert stats.binom.sf(k_hi - 1, n, p_hi) <= alpha / 2 < stats.binom.sf(k_hi - 2, n, p_hi)
    assert order_statistics(n, alpha, 0.0, sigma)[0] < n / 2 < order_statistics(
        n, alpha, 0.0, sigma)[1]  # fmt: skip
    assert order_statistics(20, 0.001, 1.0, 0.25) == (0, 21)  # too few draws: unbounded
    with pytest.raises(ValueError, match="sigma > 0"):
        order_statistics(100, 0.01, 0.1, 0.0)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Tanh(), nn.AdaptiveAvgPool2d(1),
                                 nn.Flatten(), nn.Linear(8, 1))  # fmt: skip

    def forward(self, x):
        return torch.sigmoid(4 * self.net(x)).squeeze(1)


def _attack_median(model, x, noise, radius, sign, steps=20):
    """L2 PGD on the Monte-Carlo median over fixed noise draws, pushing it up (+1) or down."""
    eps = torch.zeros_like(x, requires_grad=True)
    for _ in range(steps):
        s = model((x + eps).unsqueeze(0).add(noise).flatten(0, 1)).view(len(noise), -1)
        (g,) = torch.autograd.grad(sign * s.median(dim=0).values.sum(), eps)
        norm = g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        with torch.no_grad():
            eps += radius / 4 * g / norm
            scale = (radius / eps.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1)
            eps *= scale.view(-1, 1, 1, 1)
    with torch.no_grad():
        s = model((x + eps).unsqueeze(0).add(noise).flatten(0, 1)).view(len(noise), -1)
    return s.median(dim=0).values


@pytest.mark.slow
def test_no_attack_within_the_radius_leaves_the_interval():
    model, sigma, radius = Tiny().eval(), 0.25, 0.3
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(6, 3, 10, 10, generator=g)
        cert = certify(model, x, sigma, n=600, alpha=0.001, radius=(radius,), seed=seed,
                       progress=False)  # fmt: skip
        noise = sigma * torch.randn(600, *x.shape, generator=g)  # other draws than certify's
        up, down = (_attack_median(model, x, noise, radius, s) for s in (1, -1))
        clean = _attack_median(model, x, noise, 0.0, 1, steps=1)
        assert np.all(up.numpy() <= cert.upper[0]) and np.all(down.numpy() >= cert.lower[0])
        assert np.all(up.numpy() > clean.numpy())  # the attack did move the median


def _realisable(order, lo, hi) -> bool:
    """Whether scores inside the intervals, all different, can be ranked in ``order``."""
    level = -np.inf
    for i in order:
        level = max(level + 1e-9, lo[i])
        if level > hi[i]:
            return False
    return True


def test_certified_srcc_is_below_every_ranking_the_intervals_allow():
    rng = np.random.default_rng(0)
    for _ in range(40):
        n = 6
        centre, half = rng.random(n), rng.random(n) * rng.choice([0.02, 0.2, 0.5])
        lo, hi, y = centre - half, centre + half, rng.random(n)
        bound = certified_srcc(lo, hi, y)
        orders = itertools.permutations(range(n))
        reachable = [metrics.srcc(np.argsort(o), y) for o in orders if _realisable(o, lo, hi)]
        assert bound <= min(reachable) + 1e-12
        samples = rng.uniform(lo, hi, size=(200, n))
        assert all(metrics.srcc(s, y) >= bound - 1e-12 for s in samples)
    # disjoint intervals allow one order: the bound is its SRCC
    lo = np.array([0.0, 0.2, 0.4, 0.6, 0.8])
    y = np.array([0.1, 0.5, 0.2, 0.9, 0.7])
    assert certified_srcc(lo, lo + 0.1, y) == pytest.approx(metrics.srcc(lo, y))
    with pytest.raises(ValueError, match="lower <= upper"):
        certified_srcc(lo + 0.2, lo, y)


def test_labelled_images_give_the_smoothed_metrics():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(20, 3, 6, 6, generator=g)
    y = x.mean(dim=(1, 2, 3))
    cert = certify(MeanPixel(), torch.utils.data.TensorDataset(x, y), 0.1, n=400,
                   radius=(0.0, 0.05, 0.5), batch_size=7, progress=False)  # fmt: skip
    out = smoothed_metrics(cert)
    assert out["srcc"] > 0.9 and len(out["radii"]) == 3
    widths = [r["width"] for r in out["radii"]]
    bounds = [r["certified_srcc"] for r in out["radii"]]
    assert widths == sorted(widths) and bounds == sorted(bounds, reverse=True)
    assert bounds[-1] < bounds[0] <= out["srcc"] + 1e-12


# --- the noise draws ----------------------------------------------------------------------


class FirstPixel(nn.Module):
    """f(x) = the first pixel of each image: its noisy scores show the draws themselves."""

    def forward(self, x):
        return x[:, 0, 0, 0]


def test_every_image_gets_the_same_draws_whatever_the_batch_size():
    from cprl_fast.certify import NOISE_CHUNK, NoiseDraws, noisy_scores

    x = torch.rand(7, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    n = 3 * NOISE_CHUNK + 5  # a last chunk that is not full
    s = noisy_scores(FirstPixel(), x, 0.5, n, seed=11, chunk=8)  # draws cut across chunks
    d = NoiseDraws((3, 4, 4), n, 11, "cpu").take(0, n)[:, 0, 0, 0]
    torch.testing.assert_close(s, x[:, 0, 0, 0, None] + 0.5 * d, rtol=0, atol=1e-6)
    # the same certificate in batches of 1, 3 and 7 images
    kw = dict(sigma=0.1, n=n, radius=(0.0, 0.05), seed=11, progress=False)
    certs = [certify(MeanPixel(), x, batch_size=b, **kw) for b in (1, 3, 7)]
    for c in certs[1:]:
        np.testing.assert_array_equal(c.lower, certs[0].lower)
        np.testing.assert_array_equal(c.median, certs[0].median)


def test_draws_are_standard_normal_kept_or_made_again_and_unrelated_across_seeds():
    from cprl_fast.certify import NOISE_CHUNK, NoiseDraws

    n = 4 * NOISE_CHUNK
    kept = NoiseDraws((2, 50, 50), n, 3, "cpu")
    again = NoiseDraws((2, 50, 50), n, 3, "cpu", max_bytes=0)
    whole = kept.take(0, n)
    assert kept.keep and not again.keep and whole.shape == (n, 2, 50, 50)
    torch.testing.assert_close(again.take(5, 40), whole[5:40], rtol=0, atol=0)
    assert len(kept.kept) == 4 and again.kept == {}
    assert abs(float(whole.mean())) < 0.01 and abs(float(whole.std()) - 1) < 0.01
    other = NoiseDraws((2, 50, 50), n, 4, "cpu").take(0, n)
    assert abs(float((whole * other).mean())) < 0.01  # another seed: uncorrelated
    chunks = whole.reshape(4, -1)
    assert float(torch.corrcoef(chunks).triu(1).abs().max()) < 0.01  # chunks too
    negative = NoiseDraws((2, 50, 50), 1, -1, "cpu").take(0, 1)  # any int seed, as torch's
    assert negative.shape == (1, 2, 50, 50)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (gpu_check's test step)")
def test_cuda_draws_are_the_cpu_draws_and_give_the_same_certificate():
    from cprl_fast.certify import NOISE_CHUNK, NoiseDraws

    n = 2 * NOISE_CHUNK + 3
    on_gpu = NoiseDraws((3, 8, 8), n, 5, "cuda").take(0, n)
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), NoiseDraws((3, 8, 8), n, 5, "cpu").take(0, n),
                               rtol=0, atol=0)  # fmt: skip
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    kw = dict(sigma=0.1, n=n, radius=(0.0, 0.05), seed=5, batch_size=4, progress=False)
    gpu = certify(MeanPixel(), x, device="cuda", **kw)
    cpu = certify(MeanPixel(), x, device="cpu", **kw)
    np.testing.assert_allclose(gpu.lower, cpu.lower, rtol=0, atol=1e-6)
    np.testing.assert_allclose(gpu.median, cpu.median, rtol=0, atol=1e-6)


# --- feature-space smoothing -------------------------------------------------------------


def _quality_model(kind: str) -> nn.Module:
    """``resnet``, ``cprl`` or ``nima`` (ResNet-18), or ``native``: the native recipe's
    ResNet-18 (local contrast normalisation, images scored by 16 px tiles here)."""
    from cprl_fast.models.cprl_resnet import cprl_resnet, resnet_iqa

    torch.manual_seed(0)
    if kind == "native":
        return resnet_iqa("resnet18", input_norm="lcn", patch=16).eval()
    if kind == "nima":  # its head gives a distribution over score bins
        from cprl_fast.models import build

        return build("nima", arch="resnet18").eval()
    model = resnet_iqa("resnet18") if kind == "resnet" else cprl_resnet("resnet18")
    return model.eval()


def _exact_jacobian_norm(front, x: torch.Tensor) -> float:
    jac = torch.autograd.functional.jacobian(lambda v: front(v.unsqueeze(0)).flatten(), x)
    return float(torch.linalg.matrix_norm(jac.reshape(jac.shape[0], -1).double(), ord=2))


@pytest.mark.parametrize("kind", ["resnet", "cprl", "native", "nima"])
def test_split_features_recomposes_the_model(kind):
    """Also for the native recipe's models: the split once skipped their local contrast
    normalisation and tiles, and certified another model than the one audited."""
    from cprl_fast.certify import FEATURE_LAYERS, split_features

    model = _quality_model(kind)
    x = torch.rand(3, 3, 32, 40, generator=torch.Generator().manual_seed(1))  # 3 x 3 tiles
    with torch.no_grad():
        want = model(x)
        for layer in FEATURE_LAYERS:
            front, back = split_features(model, layer)
            torch.testing.assert_close(back(front(x)), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="layer must be one of"):
        split_features(model, "layer5")
    with pytest.raises(ValueError, match="splits a quality ResNet"):
        split_features(MeanPixel(), "stem")


def test_power_estimate_meets_the_exact_jacobian_norm_and_the_proven_bound_lies_above():
    from cprl_fast.certify import jacobian_norm, lipschitz_bound, split_features

    model = _quality_model("resnet")
    front, _ = split_features(model, "layer1")
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    exact = np.array([_exact_jacobian_norm(front, xi) for xi in x])
    est = jacobian_norm(front, x, iters=60).numpy()
    np.testing.assert_allclose(est, exact, rtol=0.02)
    bound = lipschitz_bound(model, "layer1")
    assert np.all(bound >= exact) and bound < 1e7
    # the bound's pieces: a 1x1 convolution's is its exact norm; a strided one stays above
    from cprl_fast.certify import _conv_bound

    conv = nn.Conv2d(4, 5, 1, bias=False)
    w = conv.weight.detach().double().reshape(5, 4)
    assert _conv_bound(conv) == pytest.approx(float(torch.linalg.matrix_norm(w, ord=2)))
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False)
    exact_conv = _exact_jacobian_norm(conv, torch.rand(3, 9, 9))
    assert exact_conv <= _conv_bound(conv) <= 2.0 * exact_conv * 2  # sqrt(4) = 2: tight-ish


def test_product_bound_refuses_ca_blocks_but_the_estimate_runs_through_them():
    from cprl_fast.certify import jacobian_norm, lipschitz_bound, split_features

    model = _quality_model("cprl")
    assert lipschitz_bound(model, "stem") > 0  # no CA module before layer1
    with pytest.raises(ValueError, match="not Lipschitz"):
        lipschitz_bound(model, "layer1")
    front, _ = split_features(model, "layer1")
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    est = jacobian_norm(front, x, iters=30).numpy()
    exact = np.array([_exact_jacobian_norm(front, xi) for xi in x])  # the local slope
    np.testing.assert_allclose(est, exact, rtol=0.05)


def test_native_models_get_the_estimate_and_their_tiles_noise_not_the_product_bound():
    from cprl_fast.certify import certify_features, lipschitz_bound, noisy_scores, split_features

    model = _quality_model("native")
    with pytest.raises(ValueError, match=r"product bound covers models with ImageNet input "
                       r"normalisation .*local contrast normalisation \(input_norm lcn\)"):
        lipschitz_bound(model, "stem")
    x = torch.rand(3, 3, 24, 24, generator=torch.Generator().manual_seed(5))  # 2 x 2 tiles
    cert = certify_features(model, x, "layer1", sigma=0.5, n=30, radius=(0.0,), seed=2,
                            progress=False)  # fmt: skip
    front, back = split_features(model, "layer1")
    with torch.no_grad():
        assert front(x).shape[:2] == (3, 4)  # each image's 4 tiles' features get the noise
        s = noisy_scores(back, front(x), 0.5, 30, seed=2)
    np.testing.assert_allclose(cert.median, np.median(s.numpy(), axis=1), rtol=0, atol=1e-7)
    assert np.all(cert.info["lipschitz"] > 0)


def test_feature_certificate_is_the_median_bound_at_the_scaled_radius():
    from cprl_fast.certify import certify_features, noisy_scores, split_features

    model = _quality_model("resnet")
    x = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    kw = dict(layer="layer2", sigma=0.5, n=200, seed=7, progress=False)
    a = certify_features(model, x, radius=(0.1, 0.3), lipschitz=2.0, **kw)
    b = certify_features(model, x, radius=(0.2, 0.6), lipschitz=1.0, **kw)
    np.testing.assert_array_equal(a.lower, b.lower)
    np.testing.assert_array_equal(a.upper, b.upper)
    # the median is that of the rest of the model over noise on the features
    front, back = split_features(model, "layer2")
    with torch.no_grad():
        s = noisy_scores(back, front(x), 0.5, 200, seed=7)
    np.testing.assert_allclose(a.median, np.median(s.numpy(), axis=1), rtol=0, atol=1e-7)
    assert np.all(a.lower[1] <= a.lower[0]) and np.all(a.upper[1] >= a.upper[0])
    assert a.info["space"] == "feature" and a.info["lipschitz_kind"] == "given"
    p = certify_features(model, x, radius=(0.1,), lipschitz="product", **kw)
    assert "proof" in p.info["lipschitz_kind"] and np.all(p.info["lipschitz"] > 1)
    with pytest.raises(ValueError, match="lipschitz must be"):
        certify_features(model, x, radius=(0.1,), lipschitz="exact", **kw)
    # feature units have no cap at 1 (pixel noise has: test_model_inputs.py)
    big = certify_features(model, x[:1], layer="layer2", sigma=2.0, n=10, lipschitz=1.0,
                           progress=False)  # fmt: skip
    assert big.sigma == 2.0 and np.all(big.lower <= big.upper)


def test_non_finite_noisy_scores_are_refused_not_left_out():
    # NaN sorts last: bounds over the finite scores alone would look like a certificate
    class NaNOnBrightCopies(nn.Module):
        def forward(self, x):
            s = x.mean(dim=(1, 2, 3))  # noise std 0.25 / sqrt(48) = 0.036
            return torch.where((s > 0.3) & (x[:, 0, 0, 0] > 0.6), torch.nan, s)

    x = torch.full((3, 3, 4, 4), 0.5)
    x[0] = 0.1  # image 0's copies are never NaN; about a third of image 1's are
    with pytest.raises(ValueError, match=r"score\(s\) of 200 on noisy copies of image 1 "):
        certify(NaNOnBrightCopies(), x, sigma=0.25, n=200, radius=(0.1,), batch_size=2,
                progress=False)  # fmt: skip
