"""Certified score intervals by median smoothing, and a certified bound on rank correlation.

The smoothed model of a quality model ``f`` at noise level ``sigma`` is the median of
``f(x + delta)``, ``delta ~ N(0, sigma^2 I)`` (Chiang et al., "Detection as Regression:
Certified Object Detection by Median Smoothing", NeurIPS 2020; applied to NR-IQA by
Shumitskaya et al., "Stochastic BIQA", arXiv 2411.12575, 2024). Write ``h_p(x)`` for the
``p``-quantile of ``f(x + delta)``. Their theorem: for every ``eps`` with ``||eps||_2 <= r``,

    h_{p-}(x) <= h_{1/2}(x + eps) <= h_{p+}(x),  p- = Phi(-r / sigma),  p+ = Phi(r / sigma),

so the smoothed score of every image within L2 distance ``r`` lies between two quantiles of
the noisy scores at the clean image. :func:`certify` estimates those quantiles from ``n``
noisy scores with exact binomial order-statistic bounds (docs/maths.md §8): the lower end is the
``k_lo``-th smallest sample, ``k_lo`` the largest ``k`` with ``P(Bin(n, p-) <= k - 1) <=
alpha / 2``; the upper end the ``k_hi``-th, ``k_hi`` the smallest ``k`` with ``P(Bin(n, p+) >=
k) <= alpha / 2``. With probability at least ``1 - alpha`` over the noise, the interval holds
for every perturbation of norm at most ``r`` at once. Where ``n`` is too small for an end, it is
the end of the score range (``-inf``/``+inf`` for scores of unknown range).

:func:`certified_srcc` turns intervals into the lowest SRCC any scores inside them can have.

    >>> cert = certify(model, images, sigma=0.25, n=1000, radius=(0.0, 0.25))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import optimize, stats
from torch import nn

from cprl_fast import metrics


@dataclass
class Certificate:
    """The certificates of ``N`` images at ``R`` radii.

    ``median [N]``: the Monte-Carlo median of the noisy scores (the smoothed score);
    ``lower, upper [R, N]``: the certified interval per radius (L2, pixel units of [0, 1]
    images); ``labels [N]`` when the images came with them; the settings that produced it.
    """

    median: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    radius: list[float]
    sigma: float
    n: int
    alpha: float
    labels: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    def width(self) -> np.ndarray:
        """Mean interval width per radius ``[R]`` (``inf`` where an end is unbounded)."""
        return (self.upper - self.lower).mean(axis=1)


def order_statistics(n: int, alpha: float, radius: float, sigma: float) -> tuple[int, int]:
    """``(k_lo, k_hi)``, 1-based ranks of the sorted ``n`` noisy scores that bound the smoothed
    score at every point within ``radius``, jointly with probability ``>= 1 - alpha``; ``0`` or
    ``n + 1`` where no sample is far enough out (the end is unbounded)."""
    if not (n >= 1 and 0 < alpha < 1 and sigma > 0 and radius >= 0):
        raise ValueError(f"need n >= 1, 0 < alpha < 1, sigma > 0, radius >= 0; got n={n}, "
                         f"alpha={alpha}, sigma={sigma}, radius={radius}")  # fmt: skip
    k = np.arange(1, n + 1)
    p_lo, p_hi = stats.norm.cdf(-radius / sigma), stats.norm.cdf(radius / sigma)
    ok_lo = stats.binom.cdf(k - 1, n, p_lo) <= alpha / 2
    ok_hi = stats.binom.sf(k - 1, n, p_hi) <= alpha / 2
    k_lo = int(k[ok_lo].max()) if ok_lo.any() else 0
    k_hi = int(k[ok_hi].min()) if ok_hi.any() else n + 1
    return k_lo, k_hi


def noisy_scores(model: nn.Module, x: torch.Tensor, sigma: float, n: int,
                 generator: torch.Generator, chunk: int = 256) -> torch.Tensor:  # fmt: skip
    """``f(x + delta)`` for ``n`` draws of ``delta ~ N(0, sigma^2 I)`` per image: ``[N, n]``.
    The noise is drawn on the CPU from ``generator`` (the same numbers on every device)."""
    out = torch.empty(x.shape[0], n)
    per = max(1, chunk // max(1, x.shape[0]))
    with torch.no_grad():
        for start in range(0, n, per):
            m = min(per, n - start)
            noise = torch.randn((m, *x.shape), generator=generator).to(x.device, x.dtype)
            batch = (x.unsqueeze(0) + sigma * noise).flatten(0, 1)
            out[:, start : start + m] = model(batch).float().view(m, x.shape[0]).T.cpu()
    return out


def certify(model: nn.Module, images, sigma: float, n: int = 1000, alpha: float = 0.001,
            radius: Sequence[float] = (0.0,), batch_size: int = 16, device=None, seed: int = 0,
            score_range: tuple[float, float] | None = (0.0, 1.0),
            progress: bool = True) -> Certificate:  # fmt: skip
    """Median-smoothing certificates (see the module docstring).

    Args:
        model: images ``[N, 3, H, W]`` in [0, 1] -> scores ``[N]`` (the base model; in eval
            mode while certifying, its mode restored after).
        images: a tensor ``[N, 3, H, W]`` (already the model's input: crops at its size), or a
            dataset of ``(image, label)`` pairs (labels are kept for :func:`certified_srcc`).
        sigma: noise standard deviation (pixel units). n: noise draws per image.
        alpha: the intervals hold jointly per image and radius with probability ``1 - alpha``.
        radius: L2 radii (pixel units); an L-infinity ball of ``eps`` lies inside the L2 ball
            of radius ``eps * sqrt(3 H W)``.
        score_range: the base model's output range, for unbounded ends (None: ``+-inf``).
        seed: the noise is a function of the seed and the image's position alone.
    Returns: :class:`Certificate`.
    """
    from tqdm import tqdm

    from cprl_fast.attacks.common import eval_mode

    radius = [float(r) for r in radius]
    ks = [order_statistics(n, alpha, r, sigma) for r in radius]
    if isinstance(images, torch.Tensor):
        loader, labels = torch.split(images, batch_size), None
    else:
        loader = torch.utils.data.DataLoader(images, batch_size=batch_size)
        labels = []
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    lo_end, hi_end = score_range if score_range is not None else (-np.inf, np.inf)
    g = torch.Generator().manual_seed(seed)
    medians, lowers, uppers = [], [], []
    with eval_mode(model):
        for batch in tqdm(loader, desc=f"certify (sigma={sigma:g}, n={n})", unit="batch",
                          disable=not progress):  # fmt: skip
            if labels is not None:
                batch, y = batch
                labels.append(y.float())
            s = noisy_scores(model, batch.to(device), sigma, n, g).sort(dim=1).values.numpy()
            medians.append(np.median(s, axis=1))
            lowers.append([s[:, k_lo - 1] if k_lo >= 1 else np.full(len(s), lo_end)
                           for k_lo, _ in ks])  # fmt: skip
            uppers.append([s[:, k_hi - 1] if k_hi <= n else np.full(len(s), hi_end)
                           for _, k_hi in ks])  # fmt: skip
    return Certificate(
        median=np.concatenate(medians),
        lower=np.concatenate(lowers, axis=1),
        upper=np.concatenate(uppers, axis=1),
        radius=radius, sigma=float(sigma), n=int(n), alpha=float(alpha),
        labels=None if labels is None else torch.cat(labels).numpy(),
        info={"order_statistics": ks, "seed": seed},
    )  # fmt: skip


def rank_bounds(lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image the lowest and highest rank (1 = lowest score) its score can take when every
    score lies in its interval and no two are equal: below it surely are the images whose upper
    end is below its lower end, above it those whose lower end is above its upper end."""
    lo, hi = np.asarray(lower, float), np.asarray(upper, float)
    n = lo.size
    below = (hi[None, :] < lo[:, None]).sum(axis=1)
    above = (lo[None, :] > hi[:, None]).sum(axis=1)
    return 1 + below, n - above


def certified_srcc(lower, upper, labels) -> float:
    """A lower bound on the SRCC (against ``labels``) of every score vector with each score in
    its interval ``[lower_i, upper_i]`` and no two equal (docs/maths.md §8).

    With scores free of ties their ranks ``r`` are a permutation of ``1..n``, so SRCC is the
    Pearson correlation of ``r`` with the labels' (average) ranks ``q`` and falls as ``sum_i
    r_i q_i`` falls. Any achievable ``r`` gives each image a rank inside :func:`rank_bounds`;
    the cheapest assignment of the ranks ``1..n`` to the images within those bounds
    (``scipy.optimize.linear_sum_assignment``) therefore has ``sum r_i q_i`` no larger than any
    achievable one, and the SRCC it gives is a lower bound. It can lie below the true minimum:
    the assignment ignores the order the intervals impose between images whose rank ranges
    overlap."""
    lo, hi = np.asarray(lower, float).ravel(), np.asarray(upper, float).ravel()
    q = stats.rankdata(np.asarray(labels, float).ravel())
    n = q.size
    if not (lo.size == hi.size == n) or n < 3:
        raise ValueError(f"need at least 3 images with one interval and label each, got "
                         f"{lo.size} intervals, {hi.size} and {n} labels")  # fmt: skip
    if np.any(lo > hi):
        raise ValueError("every interval needs lower <= upper")
    a, b = rank_bounds(lo, hi)
    ranks = np.arange(1, n + 1)
    allowed = (ranks[None, :] >= a[:, None]) & (ranks[None, :] <= b[:, None])
    cost = np.where(allowed, q[:, None] * ranks[None, :], 1e12)
    rows, cols = optimize.linear_sum_assignment(cost)
    r = np.empty(n)
    r[rows] = ranks[cols]
    return metrics.srcc(r, q)


def smoothed_metrics(cert: Certificate) -> dict:
    """The smoothed model's clean SRCC and PLCC (the medians against the labels) with 95%
    bootstrap intervals, and per radius the mean interval width and the certified SRCC."""
    if cert.labels is None:
        raise ValueError("smoothed_metrics needs a certificate of labelled images")
    y = cert.labels
    out = {"srcc": metrics.srcc(cert.median, y), "plcc": metrics.plcc(cert.median, y),
           "srcc_ci": list(metrics.confidence_interval(cert.median, y, "srcc")),
           "sigma": cert.sigma, "n": cert.n, "alpha": cert.alpha, "radii": []}  # fmt: skip
    for k, r in enumerate(cert.radius):
        out["radii"].append({"radius": r, "width": float(cert.width()[k]),
                             "certified_srcc": certified_srcc(cert.lower[k], cert.upper[k],
                                                              y)})  # fmt: skip
    return out
