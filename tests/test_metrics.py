"""Metrics against scipy on random data, and the logistic fit on a known curve."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from cprl_fast import metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_scipy(seed):
    rng = np.random.default_rng(seed)
    t = rng.random(50)
    p = t + rng.normal(0, 0.2, 50)
    p[:5] = p[5]  # ties: average ranks
    assert metrics.srcc(p, t) == pytest.approx(stats.spearmanr(p, t).statistic)
    assert metrics.krcc(p, t) == pytest.approx(stats.kendalltau(p, t).statistic)
    assert metrics.plcc(p, t) == pytest.approx(stats.pearsonr(p, t).statistic)
    assert metrics.mse(p, t) == pytest.approx(np.mean((p - t) ** 2))
    assert metrics.rmse(p, t) == pytest.approx(np.sqrt(np.mean((p - t) ** 2)))


def test_logistic_fit_recovers_a_known_curve():
    x = np.linspace(-3, 3, 200)
    truth = (0.9, 0.1, 0.4, 0.7)
    y = metrics.logistic4(x, *truth)
    b1, b2, b3, b4 = metrics.fit_logistic(x, y)
    np.testing.assert_allclose([b1, b2, b3, abs(b4)], truth, atol=1e-4)
    assert metrics.plcc(x, y, logistic=True) == pytest.approx(1.0, abs=1e-8)
    with pytest.raises(ValueError, match="needs at least 4 scores, got 3"):
        metrics.plcc(x[:3], y[:3], logistic=True)  # scipy's TypeError before
    assert metrics.plcc(x, y) < 0.99


def test_bad_input():
    with pytest.raises(ValueError, match="same length"):
        metrics.srcc([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least 2"):
        metrics.mse([1], [1])


def test_bootstrap_interval_covers_the_true_srcc_at_its_nominal_rate():
    """Simulation: samples of a bivariate normal with correlation 0.6, whose population Spearman
    correlation is 6/pi * asin(0.3); the 90% interval must cover it in about 90% of 300 draws
    (a binomial 300 x 0.9 lies in [252, 288] with probability above 0.99)."""
    rho = 0.6
    truth = 6 / np.pi * np.arcsin(rho / 2)
    rng = np.random.default_rng(0)
    covered = 0
    for k in range(300):
        x = rng.normal(size=80)
        y = rho * x + np.sqrt(1 - rho**2) * rng.normal(size=80)
        lo, hi = metrics.confidence_interval(x, y, level=0.9, resamples=400, seed=k)
        covered += lo <= truth <= hi
    assert 252 <= covered <= 288, covered


def test_paired_difference_finds_a_better_model_and_not_a_tie():
    rng = np.random.default_rng(1)
    y = rng.uniform(size=200)
    good, bad = y + 0.1 * rng.normal(size=200), y + 0.6 * rng.normal(size=200)
    d = metrics.paired_difference(good, bad, y)
    assert d["significant"] and d["ci"][0] > 0 and d["difference"] > 0
    same = metrics.paired_difference(good, good[::-1].copy()[::-1], y)
    assert not same["significant"] and same["ci"] == [0.0, 0.0]


def test_mean_interval_is_the_student_t_interval():
    values = [0.31, 0.45, 0.12, 0.38, 0.27, 0.50]
    got = metrics.mean_interval(values)
    lo, hi = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert got["mean"] == pytest.approx(np.mean(values))
    assert got["ci"] == pytest.approx([lo, hi]) and got["n"] == 6
    assert (got["min"], got["max"]) == (0.12, 0.50)
    wide = metrics.mean_interval([-0.9, -0.5, -0.95], bounds=(-1, 1))
    assert wide["ci"][0] == -1 and wide["ci"][1] < 1  # clipped to the range of an SRCC
    one = metrics.mean_interval([0.4])
    assert one["mean"] == 0.4 and all(np.isnan(one["ci"]))
    with pytest.raises(ValueError, match="at least one value"):
        metrics.mean_interval([])


def test_mean_interval_leaves_out_and_counts_undefined_values():
    values = [0.31, float("nan"), 0.45, 0.12]
    got, defined = metrics.mean_interval(values), metrics.mean_interval([0.31, 0.45, 0.12])
    assert got["undefined"] == 1 and got["n"] == 3 and defined["undefined"] == 0
    assert got["mean"] == pytest.approx(defined["mean"])
    assert got["ci"] == pytest.approx(defined["ci"])
    none = metrics.mean_interval([float("nan")] * 2)
    assert none["n"] == 0 and none["undefined"] == 2 and np.isnan(none["mean"])


def test_msu_scores_are_the_benchmarks_formulas_on_min_max_scaled_scores():
    rng = np.random.default_rng(0)
    clean = rng.uniform(0.2, 0.7, 40)
    attacked = clean + rng.normal(0, 0.05, 40)
    got = metrics.msu_scores(clean, attacked)
    f = (clean - clean.min()) / (clean.max() - clean.min())
    g = (attacked - clean.min()) / (clean.max() - clean.min())
    r = np.mean([np.log10(max(a, 1 - a) / (abs(b - a) + 1e-6)) for a, b in zip(f, g, strict=True)])
    assert got["robustness_score"] == pytest.approx(r)
    assert got["absolute_gain"] == pytest.approx(np.mean(g - f))
    assert got["relative_gain"] == pytest.approx(np.mean((g + 1 - (f + 1)) / (f + 1)))
    lowered = metrics.msu_scores(clean, clean - 0.1)
    assert lowered["absolute_gain"] < 0 and lowered["relative_gain"] < 0
    assert metrics.msu_scores(clean, clean)["robustness_score"] > 5  # unmoved: about 6 decades
    assert np.isnan(metrics.msu_scores([0.5, 0.5], [0.4, 0.6])["absolute_gain"])


def test_lowest_passes_over_an_undefined_value_wherever_it_comes():
    nan = float("nan")
    for values in ({"a": nan, "b": -0.5, "c": 0.2}, {"b": -0.5, "a": nan, "c": 0.2},
                   {"c": 0.2, "b": -0.5, "a": nan}):  # fmt: skip
        assert metrics.lowest(values) == "b"
    assert metrics.lowest({"a": nan, "b": nan}) == "a"  # all undefined: the first, NaN
    with pytest.raises(ValueError, match="at least one value"):
        metrics.lowest({})
