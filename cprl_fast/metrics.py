"""Quality metrics on [0, 1] scores (docs/maths.md §6), built on scipy.

SRCC (Spearman, average ranks for ties), PLCC (raw Pearson, or after the 4-parameter logistic
fit ``f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``), KRCC, MSE, RMSE.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping
from typing import TypeVar

import numpy as np
from numpy.typing import ArrayLike
from scipy import optimize, stats

_Key = TypeVar("_Key", bound=Hashable)


def _arrays(pred: ArrayLike, target: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float64).ravel()
    t = np.asarray(target, dtype=np.float64).ravel()
    if p.shape != t.shape:
        raise ValueError(f"pred and target must have the same length, got {p.size} and {t.size}")
    if p.size < 2:
        raise ValueError(f"need at least 2 scores, got {p.size}")
    return p, t


def srcc(pred: ArrayLike, target: ArrayLike) -> float:
    p, t = _arrays(pred, target)
    return float(stats.spearmanr(p, t).statistic)


def krcc(pred: ArrayLike, target: ArrayLike) -> float:
    p, t = _arrays(pred, target)
    return float(stats.kendalltau(p, t).statistic)


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    return (b1 - b2) / (1.0 + np.exp(-(x - b3) / np.abs(b4))) + b2


def fit_logistic(pred: ArrayLike, target: ArrayLike) -> np.ndarray:
    """Parameters (b1, b2, b3, b4) of the 4-parameter logistic mapping pred to target (at
    least 4 scores: one per parameter)."""
    p, t = _arrays(pred, target)
    if p.size < 4:
        raise ValueError(f"the 4-parameter logistic fit needs at least 4 scores, got {p.size}")
    p0 = [t.max(), t.min(), float(np.median(p)), max(float(np.std(p)), 1e-3)]
    params, _ = optimize.curve_fit(logistic4, p, t, p0=p0, maxfev=20000)
    return params


def plcc(pred: ArrayLike, target: ArrayLike, logistic: bool = False) -> float:
    p, t = _arrays(pred, target)
    if logistic:
        p = logistic4(p, *fit_logistic(p, t))
    return float(stats.pearsonr(p, t).statistic)


def mse(pred: ArrayLike, target: ArrayLike) -> float:
    p, t = _arrays(pred, target)
    return float(np.mean((p - t) ** 2))


def rmse(pred: ArrayLike, target: ArrayLike) -> float:
    return float(np.sqrt(mse(pred, target)))


def lowest(values: Mapping[_Key, float]) -> _Key:
    """The key of the lowest value, NaN (an undefined SRCC: every score equal) left out unless
    every value is NaN (then the first key). ``min`` alone would pick a NaN that comes first
    and pass over one that comes later, so a worst case would depend on the order."""
    if not values:
        raise ValueError("lowest needs at least one value")
    defined = {k: v for k, v in values.items() if not math.isnan(v)}
    return min(defined, key=defined.__getitem__) if defined else next(iter(values))


#: The metrics of :func:`evaluate_scores`, in the order tables and logs show them.
SCORES = ("srcc", "plcc", "krcc", "mse", "rmse")


def evaluate_scores(pred: ArrayLike, target: ArrayLike) -> dict[str, float]:
    """SRCC, PLCC and MSE as the paper's tables report them (plus KRCC and RMSE), keyed by
    :data:`SCORES`."""
    fns = {"srcc": srcc, "plcc": plcc, "krcc": krcc, "mse": mse, "rmse": rmse}
    return {name: fns[name](pred, target) for name in SCORES}


def score_change(clean: ArrayLike, attacked: ArrayLike) -> np.ndarray:
    """Per-sample ``|s' - s|``."""
    c, a = _arrays(clean, attacked)
    return np.abs(a - c)


def robustness(clean: ArrayLike, attacked: ArrayLike) -> float:
    """``R = mean_i log10(max(s_i, 1 - s_i) / (|s'_i - s_i| + 1e-6))`` (docs/maths.md §6): the
    room each score has to move over how far it moved, in decades (higher is more robust)."""
    c, a = _arrays(clean, attacked)
    return float(np.mean(np.log10(np.maximum(c, 1 - c) / (np.abs(a - c) + 1e-6))))


#: The names of :func:`msu_scores`, as reports print them.
MSU_SCORES = {"robustness_score": "robustness score R", "absolute_gain": "absolute gain",
              "relative_gain": "relative gain"}  # fmt: skip


def msu_scores(clean: ArrayLike, attacked: ArrayLike) -> dict[str, float]:
    """The MSU metrics-robustness benchmark's scores of one attack (Antsiferova et al., 2024;
    docs/maths.md §6), each the mean over the images, on scores min-max scaled by the clean
    scores' range (``f`` clean, ``f'`` attacked, both scaled):

    - ``robustness_score``: ``log10(max(f, 1 - f) / (|f' - f| + 1e-6))`` (higher: more robust);
    - ``absolute_gain``: ``f' - f`` (signed: an attack that lowers scores has a negative gain);
    - ``relative_gain``: ``(f' - f) / (f + 1)``.

    NaN when the clean scores are all equal (no range to scale by)."""
    c, a = _arrays(clean, attacked)
    lo, span = c.min(), c.max() - c.min()
    if span == 0:
        return dict.fromkeys(MSU_SCORES, float("nan"))
    c, a = (c - lo) / span, (a - lo) / span
    return {
        "robustness_score": float(np.mean(np.log10(np.maximum(c, 1 - c) / (np.abs(a - c) + 1e-6)))),
        "absolute_gain": float(np.mean(a - c)),
        "relative_gain": float(np.mean((a - c) / (c + 1))),
    }


# -- confidence intervals --------------------------------------------------------------------
#: Resamples of every bootstrap interval (percentile method) and its confidence level.
BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95


def _pearson_along(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    a = a - a.mean(axis=axis, keepdims=True)
    b = b - b.mean(axis=axis, keepdims=True)
    den = np.sqrt((a * a).sum(axis=axis) * (b * b).sum(axis=axis))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(axis=axis) / den


def _srcc_along(p: np.ndarray, t: np.ndarray, axis: int = -1) -> np.ndarray:
    return _pearson_along(stats.rankdata(p, axis=axis), stats.rankdata(t, axis=axis), axis)


#: The metrics an interval can be drawn for, each vectorised over resamples (last axis: images).
_ALONG = {"srcc": _srcc_along, "plcc": _pearson_along}


def _bootstrap(data: tuple[np.ndarray, ...], statistic: Callable[..., np.ndarray], seed: int,
               resamples: int, level: float) -> tuple[float, float]:  # fmt: skip
    res = stats.bootstrap(data, statistic, paired=True, vectorized=True, axis=-1,
                          n_resamples=resamples, confidence_level=level, method="percentile",
                          random_state=np.random.default_rng(seed))  # fmt: skip
    lo, hi = res.confidence_interval
    return float(lo), float(hi)


def confidence_interval(pred: ArrayLike, target: ArrayLike, metric: str = "srcc",
                        level: float = CONFIDENCE, resamples: int = BOOTSTRAP_RESAMPLES,
                        seed: int = 0) -> tuple[float, float]:  # fmt: skip
    """Bootstrap interval of ``metric`` (``"srcc"`` or ``"plcc"``) over the images: the images
    are resampled with replacement (pairs kept), ``resamples`` times, and the interval is the
    central ``level`` share of the resampled values (percentile method, scipy.stats.bootstrap).
    It describes the uncertainty from which images were drawn, not from training seeds."""
    p, t = _arrays(pred, target)
    fn = _ALONG[metric]
    return _bootstrap((p, t), lambda a, b, axis=-1: fn(a, b, axis), seed, resamples, level)


def scores_with_intervals(pred: ArrayLike, target: ArrayLike, seed: int = 0) -> dict:
    """:func:`evaluate_scores` and the 95% bootstrap intervals of SRCC and PLCC over the images
    (``srcc_ci``, ``plcc_ci``: :func:`confidence_interval`)."""
    out: dict = evaluate_scores(pred, target)
    for name in _ALONG:
        out[f"{name}_ci"] = list(confidence_interval(pred, target, name, seed=seed))
    return out


def paired_difference(pred_a: ArrayLike, pred_b: ArrayLike, target: ArrayLike,
                      metric: str = "srcc", level: float = CONFIDENCE,
                      resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> dict:  # fmt: skip
    """``metric(a) - metric(b)`` on the same images, with a paired bootstrap interval (the same
    resampled images for both); ``significant`` when the interval excludes 0."""
    a, t = _arrays(pred_a, target)
    b, _ = _arrays(pred_b, target)
    fn = _ALONG[metric]
    lo, hi = _bootstrap((a, b, t), lambda x, y, z, axis=-1: fn(x, z, axis) - fn(y, z, axis),
                        seed, resamples, level)  # fmt: skip
    diff = float(fn(a, t) - fn(b, t))
    return {"difference": diff, "ci": [lo, hi], "significant": bool(lo > 0 or hi < 0)}


def mean_interval(values: ArrayLike, level: float = CONFIDENCE,
                  bounds: tuple[float, float] | None = None) -> dict:  # fmt: skip
    """The mean of repeated measurements (e.g. one SRCC per fold x seed) with its Student-t
    interval (``n - 1`` degrees of freedom), the spread (``min``, ``max``) and ``n``. With one
    value the interval is ``(nan, nan)``. Repeated runs that share data (folds of one dataset)
    are not independent, so the interval is a guide to run-to-run spread, not an exact test.

    NaN values (an SRCC of constant scores is undefined) are left out of every statistic and
    counted as ``undefined``; ``n`` counts the others. With none left, every statistic is NaN."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("mean_interval needs at least one value")
    undefined = int(np.isnan(v).sum())
    v = v[~np.isnan(v)]
    if v.size == 0:
        nan = float("nan")
        return {"mean": nan, "ci": [nan, nan], "min": nan, "max": nan, "n": 0,
                "undefined": undefined}  # fmt: skip
    mean = float(v.mean())
    if v.size < 2:
        lo = hi = float("nan")
    else:
        half = float(stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
        lo, hi = mean - half, mean + half
        if bounds is not None:  # the mean cannot leave the values' range (SRCC: [-1, 1])
            lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return {"mean": mean, "ci": [lo, hi], "min": float(v.min()), "max": float(v.max()),
            "n": int(v.size), "undefined": undefined}  # fmt: skip
