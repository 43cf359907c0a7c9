"""Bootstrap intervals and paired comparisons, checked by seeded simulation."""

import time

import numpy as np
import pytest
from scipy import stats

from xmodality_lite.bootstrap import bootstrap_ci, paired_bootstrap

REPS, N = 2000, 30  # simulated studies, items per study


def _binomial_band(p_low, p_high, reps=REPS, tail=0.001):
    """Rates a seeded simulation of ``reps`` studies may show when the true rate lies in
    [p_low, p_high]: the binomial 0.1 % and 99.9 % quantiles at the two ends."""
    return stats.binom.ppf(tail, reps, p_low) / reps, stats.binom.ppf(1 - tail, reps, p_high) / reps


def test_percentile_interval_covers_the_true_mean_at_the_stated_rate():
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    mu = 1.0
    samples = rng.normal(mu, 2.0, (REPS, N))
    hits = [(ci.low <= mu <= ci.high) for ci in
            (bootstrap_ci(x, seed=i) for i, x in enumerate(samples))]
    # The percentile interval is a little short for small n (it uses the plug-in SD and normal
    # rather than t quantiles): its true coverage at n = 30 is ≈ 0.93–0.95, not exactly 0.95.
    low, high = _binomial_band(0.93, 0.95)  # ≈ (0.912, 0.965); a 90 % interval would give 0.88
    assert low <= np.mean(hits) <= high
    assert time.perf_counter() - t0 < 5.0


def test_interval_estimate_level_and_seed():
    x = np.random.default_rng(1).normal(size=50)
    ci = bootstrap_ci(x, seed=3)
    assert ci.estimate == pytest.approx(x.mean()) and ci.low < x.mean() < ci.high
    assert bootstrap_ci(x, seed=3) == ci  # seeded: reproducible
    narrow = bootstrap_ci(x, level=0.5, seed=3)
    assert ci.low < narrow.low < narrow.high < ci.high
    med = bootstrap_ci(x, np.median, seed=3)
    assert med.estimate == pytest.approx(np.median(x))


def test_interval_edge_cases():
    assert np.isnan(bootstrap_ci([np.nan, np.nan]).estimate)
    one = bootstrap_ci([2.0, np.nan])  # NaN items are left out; one item has no spread
    assert one.estimate == 2.0 and np.isnan(one.low) and np.isnan(one.high)
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci([1.0, 2.0], level=95)
    with pytest.raises(ValueError, match="1-D"):
        bootstrap_ci(np.zeros((3, 2)))


def test_paired_comparison_finds_a_real_shift_and_not_a_null_one():
    rng = np.random.default_rng(2)
    patient = rng.normal(0.0, 3.0, (REPS, N))  # shared by both models: must cancel in pairs
    noise = rng.normal(0.0, 1.0, (REPS, N))
    null = np.array([paired_bootstrap(patient[i] + noise[i], patient[i], n_boot=1000,
                                      seed=i).p_value for i in range(REPS)])
    # The sign-flip test is valid at any n (its size is at most 0.05, and close to it for
    # continuous data): the band allows a true size of 0.04–0.05.
    low, high = _binomial_band(0.04, 0.05)
    assert low <= np.mean(null < 0.05) <= high  # neither blind nor trigger-happy
    # a shift of one noise SD with n = 30 (t-test power > 0.999) is found nearly always
    shift = [paired_bootstrap(patient[i] + noise[i] + 1.0, patient[i], n_boot=1000, seed=i)
             for i in range(200)]
    assert np.mean([c.p_value < 0.05 for c in shift]) >= 0.99
    assert np.mean([c.low > 0 for c in shift]) >= 0.99


def test_paired_comparison_values():
    a, b = np.array([3.0, 5.0, 4.0, 6.0]), np.array([1.0, 2.0, 2.0, 3.0])
    c = paired_bootstrap(a, b, seed=0)
    assert c.difference == pytest.approx(np.mean(a - b))
    assert 2.0 <= c.low < c.high <= 3.0  # resampled means of the differences {2, 3, 2, 3}
    # exact sign-flip test: of the 2^4 sign patterns only all-plus and all-minus reach |2.5|
    assert c.p_value == pytest.approx(2 / 16)
    # differences 5, 1, 1, −1, 1 (mean 1.4): a flip pattern reaches |sum| ≥ 7 when at least
    # three of the four unit differences share the sign of the 5: 2 · (4 + 1) = 10 of 32
    d = np.array([5.0, 1.0, 1.0, -1.0, 1.0])
    assert paired_bootstrap(d, np.zeros(5)).p_value == pytest.approx(10 / 32)
    same = paired_bootstrap(a, a)
    assert same.difference == 0.0 and same.p_value == 1.0
    with pytest.raises(ValueError, match="pair"):
        paired_bootstrap(a, b[:3])
