"""Quality metrics on [0, 1] scores (docs/maths.md §6), built on scipy.

SRCC (Spearman, average ranks for ties), PLCC (raw Pearson, or after the 4-parameter logistic
fit ``f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``), KRCC, MSE, RMSE.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, stats


def _arrays(pred, target) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float64).ravel()
    t = np.asarray(target, dtype=np.float64).ravel()
    if p.shape != t.shape:
        raise ValueError(f"pred and target must have the same length, got {p.size} and {t.size}")
    if p.size < 2:
        raise ValueError(f"need at least 2 scores, got {p.size}")
    return p, t


def srcc(pred, target) -> float:
    p, t = _arrays(pred, target)
    return float(stats.spearmanr(p, t).statistic)


def krcc(pred, target) -> float:
    p, t = _arrays(pred, target)
    return float(stats.kendalltau(p, t).statistic)


def logistic4(x, b1, b2, b3, b4):
    return (b1 - b2) / (1.0 + np.exp(-(x - b3) / np.abs(b4))) + b2


def fit_logistic(pred, target) -> np.ndarray:
    """Parameters (b1, b2, b3, b4) of the 4-parameter logistic mapping pred to target."""
    p, t = _arrays(pred, target)
    p0 = [t.max(), t.min(), float(np.median(p)), max(float(np.std(p)), 1e-3)]
    params, _ = optimize.curve_fit(logistic4, p, t, p0=p0, maxfev=20000)
    return params


def plcc(pred, target, logistic: bool = False) -> float:
    p, t = _arrays(pred, target)
    if logistic:
        p = logistic4(p, *fit_logistic(p, t))
    return float(stats.pearsonr(p, t).statistic)


def mse(pred, target) -> float:
    p, t = _arrays(pred, target)
    return float(np.mean((p - t) ** 2))


def rmse(pred, target) -> float:
    return float(np.sqrt(mse(pred, target)))


def evaluate_scores(pred, target) -> dict[str, float]:
    """SRCC, PLCC and MSE as the paper's tables report them (plus KRCC and RMSE)."""
    return {
        "srcc": srcc(pred, target),
        "plcc": plcc(pred, target),
        "krcc": krcc(pred, target),
        "mse": mse(pred, target),
        "rmse": rmse(pred, target),
    }


def score_change(clean, attacked) -> np.ndarray:
    """Per-sample ``|s' - s|``."""
    c, a = _arrays(clean, attacked)
    return np.abs(a - c)


def robustness(clean, attacked) -> float:
    """``R = mean_i log10(max(s_i, 1 - s_i) / (|s'_i - s_i| + 1e-6))`` (docs/maths.md §6): the
    room each score has to move over how far it moved, in decades (higher is more robust)."""
    c, a = _arrays(clean, attacked)
    return float(np.mean(np.log10(np.maximum(c, 1 - c) / (np.abs(a - c) + 1e-6))))
