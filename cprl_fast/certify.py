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

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import optimize, stats
from torch import nn

from cprl_fast import metrics
from cprl_fast.checks import check_count, check_images, check_noise_sigma


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


def check_settings(sigma: float, n: int, alpha: float, radius: Sequence[float],
                   batch_size: int = 1, pixel_units: bool = True) -> list[float]:  # fmt: skip
    """The settings of a certificate, each checked with a message naming it; returns the radii
    as floats. ``pixel_units``: the noise goes on the images (else on features)."""
    check_noise_sigma(sigma, "sigma", pixel_units)
    check_count(n, "n (noise draws per image)")
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    check_count(batch_size, "batch_size")
    radius = [float(r) for r in radius]
    if not radius:
        raise ValueError("radius must hold at least one L2 radius, e.g. (0.0,)")
    bad = [r for r in radius if not (math.isfinite(r) and r >= 0)]
    if bad:
        raise ValueError(f"every radius must be finite and >= 0, got {bad[0]!r}")
    return radius


_order_statistics = functools.lru_cache(maxsize=65536)(order_statistics)


#: Noise draws per chunk of :class:`NoiseDraws`, each chunk drawn from a seed of its own.
NOISE_CHUNK = 16
#: The bytes of noise draws :class:`NoiseDraws` keeps on the device by default (1 GiB: 1000
#: draws of a 224 px image take 602 MB).
NOISE_BYTES = 1 << 30


def _chunk_seed(seed: int, chunk: int) -> int:
    """A 63-bit seed for chunk ``chunk`` of the draws of ``seed`` (any integer, taken modulo
    2**64 as torch.Generator.manual_seed takes it; numpy's SeedSequence mixes the pair, so
    neighbouring seeds and chunks give unrelated streams)."""
    pair = [seed % 2**64, chunk]
    lo, hi = np.random.SeedSequence(pair).generate_state(2, np.uint32).tolist()
    return (hi & 0x7FFFFFFF) << 32 | lo


class NoiseDraws:
    """The ``n`` standard normal draws ``[*shape]`` of median smoothing, shared by every image:
    draw ``j`` is a function of ``(seed, j)`` alone, so a seed gives the same draws on every
    device and at every batch size. Each image's ``n`` draws are independent, which is all that
    its certificate needs (the joint confidence over images is a union bound, which holds for
    dependent events).

    The draws are made on the CPU, :data:`NOISE_CHUNK` at a time, each chunk from its own seed
    (:func:`_chunk_seed`), and copied to ``device`` without a host wait
    (:func:`cprl_fast.devices.to_device`). They are kept there while all ``n`` fit in
    ``max_bytes``: drawn once per certificate, not once per image (a CPU draws about 180 M
    normal numbers a second on one thread, whatever its cores, slower than a GPU scores noisy
    images). Past the budget each batch draws them again, the same numbers."""

    def __init__(self, shape: Sequence[int], n: int, seed: int, device: str | torch.device,
                 dtype: torch.dtype = torch.float32, max_bytes: int = NOISE_BYTES):  # fmt: skip
        self.shape, self.n, self.seed = tuple(shape), int(n), int(seed)
        self.device, self.dtype = torch.device(device), dtype
        size = self.n * math.prod(self.shape) * dtype.itemsize
        self.keep = size <= max_bytes
        self.kept: dict[int, torch.Tensor] = {}

    def chunk(self, c: int) -> torch.Tensor:
        """Draws ``c * NOISE_CHUNK`` to ``(c + 1) * NOISE_CHUNK`` (fewer in the last chunk):
        ``[m, *shape]`` in ``dtype`` on ``device``."""
        found = self.kept.get(c)
        if found is None:
            from cprl_fast.devices import to_device

            m = min(NOISE_CHUNK, self.n - c * NOISE_CHUNK)
            g = torch.Generator().manual_seed(_chunk_seed(self.seed, c))
            found = to_device(torch.randn((m, *self.shape), generator=g), self.device)
            found = found.to(self.dtype)
            if self.keep:
                self.kept[c] = found
        return found

    def take(self, start: int, stop: int) -> torch.Tensor:
        """Draws ``start`` to ``stop``: ``[stop - start, *shape]``."""
        first, last = start // NOISE_CHUNK, (stop - 1) // NOISE_CHUNK
        parts = [self.chunk(c)[max(start - c * NOISE_CHUNK, 0) : stop - c * NOISE_CHUNK]
                 for c in range(first, last + 1)]  # fmt: skip
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def noisy_scores(model: nn.Module, x: torch.Tensor, sigma: float, n: int, seed: int = 0,
                 chunk: int = 256, draws: NoiseDraws | None = None) -> torch.Tensor:  # fmt: skip
    """``f(x + sigma * d_j)`` for the ``n`` draws ``d_j`` of ``seed`` (:class:`NoiseDraws`;
    pass ``draws`` to reuse them over batches) and every image of ``x`` ``[N, ...]``:
    ``[N, n]`` float32 on the CPU. About ``chunk`` noisy images per forward."""
    if draws is None:
        draws = NoiseDraws(x.shape[1:], n, seed, x.device, x.dtype)
    out = torch.empty(x.shape[0], n, device=x.device)
    per = max(1, chunk // max(1, x.shape[0]))
    with torch.no_grad():
        for start in range(0, n, per):
            m = min(per, n - start)
            noise = draws.take(start, start + m)
            batch = (x.unsqueeze(0) + sigma * noise.unsqueeze(1)).flatten(0, 1)
            out[:, start : start + m] = model(batch).float().view(m, x.shape[0]).T
    return out.cpu()  # one read of the scores per batch of images


def check_noisy_scores(scores: np.ndarray, first: int, sigma: float) -> None:
    """Refuses noisy scores ``[N, n]`` (of the images numbered from ``first``) of which any is
    NaN or infinite: the quantiles would be taken over the finite ones alone (NaN sorts last),
    and bounds from them are no certificate."""
    bad = ~np.isfinite(scores)
    if bad.any():
        i = int(bad.any(axis=1).argmax())
        raise ValueError(f"the model gave {int(bad[i].sum())} non-finite score(s) of "
                         f"{scores.shape[1]} on noisy copies of image {first + i} "
                         f"(sigma={sigma:g}): a certificate needs a finite score for every "
                         "draw")  # fmt: skip


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
        seed: the noise draws are a function of the seed alone: every image gets the same
            ``n`` draws (:class:`NoiseDraws`), on any device and at any batch size.
    Returns: :class:`Certificate`.
    """
    return _smooth(model, None, images, sigma, n, alpha, radius, batch_size, device, seed,
                   score_range, progress, None)


def _smooth(model: nn.Module, front: nn.Module | None, images, sigma: float, n: int,
            alpha: float, radius: Sequence[float], batch_size: int, device, seed: int,
            score_range, progress: bool, lipschitz) -> Certificate:  # fmt: skip
    """The sampling and the intervals of :func:`certify` (``front`` None: noise on the input)
    and :func:`certify_features` (noise on ``front(x)``, the scores ``model(front(x) + noise)``,
    radius ``r`` in input units certified as ``lipschitz(batch) * r`` in feature units)."""
    import time

    from tqdm import tqdm

    from cprl_fast.attacks.common import eval_mode

    radius = check_settings(sigma, n, alpha, radius, batch_size,  # before any work
                            pixel_units=front is None)
    if isinstance(images, torch.Tensor):
        loader, labels = torch.split(images, batch_size), None
    else:
        loader = torch.utils.data.DataLoader(images, batch_size=batch_size)
        labels = []
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    lo_end, hi_end = score_range if score_range is not None else (-np.inf, np.inf)
    draws = None  # made at the first batch, where the (feature) shape is known
    medians, lowers, uppers, lips = [], [], [], []
    start = time.perf_counter()
    space = "input" if front is None else "feature"
    with eval_mode(model), eval_mode(front if front is not None else model):
        for batch in tqdm(loader, desc=f"certify ({space}, sigma={sigma:g}, n={n})", leave=False,
                          unit="batch", disable=not progress):  # fmt: skip
            if labels is not None:
                batch, y = batch
                labels.append(y.float())
            check_images(batch)  # finite, in [0, 1]: a NaN image is refused, never certified
            batch = batch.to(device)
            scale = np.ones(len(batch))
            if front is not None:
                scale = np.asarray(lipschitz(batch), dtype=np.float64)
                with torch.no_grad():
                    batch = front(batch)
            if draws is None or draws.shape != tuple(batch.shape[1:]):  # (sizes may vary)
                draws = NoiseDraws(batch.shape[1:], n, seed, batch.device, batch.dtype)
            s = noisy_scores(model, batch, sigma, n, draws=draws).sort(dim=1).values.numpy()
            check_noisy_scores(s, sum(map(len, medians)), sigma)
            medians.append(np.median(s, axis=1))
            lo, hi = np.empty((len(radius), len(s))), np.empty((len(radius), len(s)))
            for i in range(len(s)):
                for j, r in enumerate(radius):
                    k_lo, k_hi = _order_statistics(n, alpha, float(r * scale[i]), sigma)
                    lo[j, i] = s[i, k_lo - 1] if k_lo >= 1 else lo_end
                    hi[j, i] = s[i, k_hi - 1] if k_hi <= n else hi_end
            lowers.append(lo)
            uppers.append(hi)
            lips.append(scale)
    info = {"seed": seed, "space": space, "seconds": time.perf_counter() - start}
    if front is None:
        info["order_statistics"] = [order_statistics(n, alpha, r, sigma) for r in radius]
    else:
        info["lipschitz"] = np.concatenate(lips)
    return Certificate(
        median=np.concatenate(medians),
        lower=np.concatenate(lowers, axis=1),
        upper=np.concatenate(uppers, axis=1),
        radius=radius, sigma=float(sigma), n=int(n), alpha=float(alpha),
        labels=None if labels is None else torch.cat(labels).numpy(),
        info=info,
    )  # fmt: skip


#: Where :func:`certify_features` can split a :class:`~cprl_fast.models.cprl_resnet.QualityResNet`:
#: after the stem (conv, batch norm, ReLU, max-pool) or after a stage.
FEATURE_LAYERS = ("stem", "layer1", "layer2", "layer3", "layer4")


class _Front(nn.Module):
    """Images ``[N, 3, H, W]`` in [0, 1] -> the features after ``layer``: ``[N, C, h, w]``, or
    for images the model scores by tiles (``patch``), those of each tile ``[N, T, C, h, w]``;
    the model's input normalisation (local contrast normalisation too) is applied as its own
    forward applies it (per tile)."""

    def __init__(self, model: nn.Module, layer: str):
        super().__init__()
        self.model, self.stages = model, FEATURE_LAYERS[1 : FEATURE_LAYERS.index(layer) + 1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from cprl_fast.models.inputs import tiles

        n, tiled = x.shape[0], self.model.tiled(x)
        if tiled:
            x = tiles(x, self.model.patch)
        b = self.model.backbone
        z = b.maxpool(b.relu(b.bn1(b.conv1(self.model.normalize(x)))))
        for name in self.stages:
            z = getattr(b, name)(z)
        return z.view(n, -1, *z.shape[1:]) if tiled else z


class _Back(nn.Module):
    """The features after ``layer`` -> scores ``[N]``: the rest of the model."""

    def __init__(self, model: nn.Module, layer: str):
        super().__init__()
        self.model, self.stages = model, FEATURE_LAYERS[FEATURE_LAYERS.index(layer) + 1 :]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        n, tiles = z.shape[0], (z.shape[1] if z.dim() == 5 else None)
        if tiles is not None:  # each tile's features: the image's score is the tiles' mean
            z = z.flatten(0, 1)
        b = self.model.backbone
        for name in self.stages:
            z = getattr(b, name)(z)
        scores = self.model.from_features(b.fc(torch.flatten(b.avgpool(z), 1)))
        return scores if tiles is None else scores.view(n, tiles).mean(1)


def split_features(model: nn.Module, layer: str) -> tuple[nn.Module, nn.Module]:
    """``(front, back)`` with ``back(front(x)) == model(x)``: a quality ResNet (every model of
    the registry but DBCNN) cut after ``layer`` (one of :data:`FEATURE_LAYERS`)."""
    from cprl_fast.models.cprl_resnet import QualityResNet

    if not isinstance(model, QualityResNet):
        raise ValueError(f"feature-space smoothing splits a quality ResNet (resnet, cprl, sat, "
                         f"nt models), got {type(model).__name__}")  # fmt: skip
    if layer not in FEATURE_LAYERS:
        raise ValueError(f"layer must be one of {', '.join(FEATURE_LAYERS)}, got {layer!r}")
    return _Front(model, layer), _Back(model, layer)


def jacobian_norm(front: nn.Module, x: torch.Tensor, iters: int = 20, step: float = 1e-3,
                  seed: int = 0) -> torch.Tensor:  # fmt: skip
    """Per image, an estimate of the largest singular value of the Jacobian of ``front`` at
    ``x`` ``[N, ...]`` (FS-IQA's input-to-feature Lipschitz estimate): ``iters`` power
    iterations on ``J^T J``, ``J v`` by central differences of width ``step`` (pixel units;
    the rank-based CA modules have no forward-mode derivative) and ``J^T u`` by autograd.
    Returns ``[N]`` float64 (on the CPU). An estimate from below of the local slope at ``x``,
    not a bound: the features of a nearby image can move faster."""
    g = torch.Generator().manual_seed(seed)
    flat = (x.shape[0], -1)
    v = torch.randn(x.shape, generator=g, dtype=torch.float32).to(x.device, x.dtype)
    v = v / v.reshape(flat).norm(dim=1).reshape(-1, *[1] * (x.dim() - 1))
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        feats = front(xg)
    est = torch.zeros(x.shape[0], dtype=torch.float64)
    for _ in range(iters):
        with torch.no_grad():
            jv = (front(x + step * v) - front(x - step * v)) / (2 * step)
        est = jv.reshape(flat).norm(dim=1).double().cpu()
        (w,) = torch.autograd.grad(feats, xg, grad_outputs=jv, retain_graph=True)
        norm = w.reshape(flat).norm(dim=1).clamp_min(1e-30)
        v = w / norm.reshape(-1, *[1] * (x.dim() - 1))
    return est


def _conv_bound(conv: nn.Conv2d) -> float:
    """An upper bound on the L2 operator norm of a convolution (bias aside): the spectral norm
    of its weight as a ``[out, in * kh * kw]`` matrix, times the square root of how many kernel
    windows can cover one input pixel (``ceil(kh / sh) * ceil(kw / sw)``; docs/maths.md §8)."""
    if conv.groups != 1 or tuple(conv.dilation) != (1, 1):
        raise ValueError("the product bound covers convolutions without groups or dilation")
    w = conv.weight.detach().double().reshape(conv.out_channels, -1)
    (kh, kw), (sh, sw) = conv.kernel_size, conv.stride
    return float(torch.linalg.matrix_norm(w, ord=2)) * math.sqrt(
        math.ceil(kh / sh) * math.ceil(kw / sw))  # fmt: skip


def _bn_bound(bn: nn.BatchNorm2d) -> float:
    """Batch norm in eval mode is a per-channel affine map: its largest absolute scale."""
    if bn.running_var is None:
        raise ValueError("the product bound needs batch norm with running statistics")
    scale = bn.running_var.detach().double().add(bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight.detach().double().abs()
    return float(scale.max())


def _pool_bound(pool: nn.MaxPool2d) -> float:
    """Max-pooling: each window's max moves at most as far as its largest input, and a pixel
    lies in at most ``ceil(k / s)`` windows per axis."""
    k = pool.kernel_size if isinstance(pool.kernel_size, tuple) else (pool.kernel_size,) * 2
    st = pool.stride if isinstance(pool.stride, tuple) else (pool.stride,) * 2
    if pool.dilation not in (1, (1, 1)):
        raise ValueError("the product bound covers max-pooling without dilation")
    return math.sqrt(math.ceil(k[0] / st[0]) * math.ceil(k[1] / st[1]))


def _block_bound(block: nn.Module) -> float:
    from torchvision.models.resnet import BasicBlock, Bottleneck

    if type(block) not in (BasicBlock, Bottleneck):
        raise ValueError(f"the product bound covers plain ResNet blocks; {type(block).__name__} "
                         "is not Lipschitz (its rank-based mask jumps): use the power "
                         "estimate")  # fmt: skip
    convs = ("conv1", "conv2") + (("conv3",) if type(block) is Bottleneck else ())
    branch = 1.0
    for c in convs:
        branch *= _conv_bound(getattr(block, c)) * _bn_bound(getattr(block, "bn" + c[-1]))
    short = 1.0
    if block.downsample is not None:
        short = _conv_bound(block.downsample[0]) * _bn_bound(block.downsample[1])
    return branch + short  # the ReLU after the sum is 1-Lipschitz


def lipschitz_bound(model: nn.Module, layer: str) -> float:
    """A proven upper bound on the L2 Lipschitz constant of the map from images (pixel units)
    to the features after ``layer`` (a product of per-layer bounds: input normalisation,
    convolutions, batch norm in eval mode, ReLU, max-pooling, residual sums), for plain ResNet
    blocks; a block with a CA module raises (the hard rank makes it discontinuous), and so
    does a model with local contrast normalisation or tiles (``patch``), which the product
    does not cover. Usually far above the true constant."""
    front, _ = split_features(model, layer)
    if model.lcn is not None or model.patch is not None:
        raise ValueError("the product bound covers models with ImageNet input normalisation "
                         "that score the whole image; this one has "
                         + ("local contrast normalisation (input_norm lcn)" if model.lcn
                            is not None else f"tiles of patch={model.patch} px")
                         + ": use the power estimate")  # fmt: skip
    b = model.backbone
    bound = 1.0 / float(model.std.min())
    bound *= _conv_bound(b.conv1) * _bn_bound(b.bn1) * _pool_bound(b.maxpool)
    for name in front.stages:
        for block in getattr(b, name):
            bound *= _block_bound(block)
    return bound


def certify_features(model: nn.Module, images, layer: str, sigma: float, n: int = 1000,
                     alpha: float = 0.001, radius: Sequence[float] = (0.0,),
                     lipschitz: str | float = "power", batch_size: int = 16, device=None,
                     seed: int = 0, score_range: tuple[float, float] | None = (0.0, 1.0),
                     power_iters: int = 20, progress: bool = True) -> Certificate:  # fmt: skip
    """Feature-space median smoothing (FS-IQA: Shumitskaya, Vatolin and Antsiferova, arXiv
    2508.05516, 2025): the smoothed score is the median of ``back(front(x) + delta)``, ``delta
    ~ N(0, sigma^2 I)`` in the features after ``layer``, so the backbone up to ``layer`` runs
    once per image and only the rest ``n`` times. If ``||front(x') - front(x)|| <= L ||x' -
    x||``, an input perturbation of L2 norm ``r`` moves the features by at most ``L r``, and the
    median-smoothing theorem of :func:`certify` at feature radius ``L r`` bounds the smoothed
    score. ``lipschitz``: ``"power"`` (per image, :func:`jacobian_norm`: FS-IQA's estimate, NOT
    a proof: the intervals are then estimates too), ``"product"`` (:func:`lipschitz_bound`, a
    proof, for plain ResNets), or a number. ``sigma`` is in feature units; ``radius`` in input
    (pixel) units. Returns a :class:`Certificate`; ``info`` holds the space, the constant per
    image and the seconds taken."""
    front, back = split_features(model, layer)
    if isinstance(lipschitz, str) and lipschitz not in ("power", "product"):
        raise ValueError(f"lipschitz must be 'power', 'product' or a number, got {lipschitz!r}")
    if lipschitz == "power":
        def scale(x):
            return jacobian_norm(front, x, power_iters, seed=seed).numpy()
    else:
        value = lipschitz_bound(model, layer) if lipschitz == "product" else float(lipschitz)
        if not value > 0:
            raise ValueError(f"lipschitz must be > 0, got {value}")

        def scale(x):
            return np.full(len(x), value)

    cert = _smooth(back, front, images, sigma, n, alpha, radius, batch_size, device, seed,
                   score_range, progress, scale)  # fmt: skip
    cert.info.update(layer=layer, lipschitz_kind="product bound (proof)" if lipschitz ==
                     "product" else "power-iteration estimate (not a proof)"
                     if lipschitz == "power" else "given")  # fmt: skip
    return cert


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
