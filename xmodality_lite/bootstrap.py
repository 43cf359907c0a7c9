"""Percentile-bootstrap confidence intervals and paired comparisons over patients or slices.

A metric averaged over a handful of test patients is a random number: another draw of patients
would give another mean. Resampling the items with replacement (Efron & Tibshirani 1993, ch. 13)
shows how far it moves, and comparing two models on *the same items* (a paired test) shows
whether their difference is larger than that noise. Every function is seeded, so a table is
reproducible.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

N_BOOT = 2000


class Interval(NamedTuple):
    """A statistic and its percentile-bootstrap confidence interval."""

    estimate: float
    low: float
    high: float


class PairedComparison(NamedTuple):
    """stat(a − b) over paired items, its bootstrap interval, and a two-sided p-value."""

    difference: float
    low: float
    high: float
    p_value: float


def _resampled(values: np.ndarray, stat: Callable, n_boot: int, seed: int) -> np.ndarray:
    """``stat`` of ``n_boot`` resamples (with replacement) of ``values`` [N] → [n_boot]."""
    idx = np.random.default_rng(seed).integers(0, len(values), (n_boot, len(values)))
    return np.asarray(stat(values[idx], axis=-1), np.float64)


def _check(values, name: str) -> np.ndarray:
    values = np.asarray(values, np.float64)
    if values.ndim != 1:
        raise ValueError(f"{name} must be one value per item (1-D), got shape {values.shape}")
    return values


def _check_level(level: float, n_boot: int) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")


def bootstrap_ci(values, stat: Callable = np.mean, *, n_boot: int = N_BOOT, level: float = 0.95,
                 seed: int = 0) -> Interval:
    """``stat`` of ``values`` [N] and its percentile-bootstrap interval at ``level``.

    ``stat`` must reduce along ``axis=-1`` (``np.mean``, ``np.median`` ...). NaN items (a metric
    undefined for that item, e.g. an empty region) are left out. With fewer than two items the
    spread is unknown and the interval is (NaN, NaN).
    """
    values = _check(values, "values")
    _check_level(level, n_boot)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    estimate = float(stat(values, axis=-1))
    if values.size < 2:
        return Interval(estimate, float("nan"), float("nan"))
    boot = _resampled(values, stat, n_boot, seed)
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return Interval(estimate, float(low), float(high))


def _sign_flip_p(diff: np.ndarray, stat: Callable, n_flips: int, seed: int) -> float:
    """Two-sided sign-flip randomisation test of "no difference" for paired differences [N].

    Under the null each item's difference is as likely to be negative as positive, so the
    observed |stat| is ranked among those of sign-flipped copies: all 2^N of them when N ≤ 16
    (exact), else ``n_flips`` seeded random ones with the (k + 1)/(B + 1) convention.
    """
    n = diff.size
    if n <= 16:
        signs = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)  # every pattern
        flipped = np.abs(np.asarray(stat(signs * diff, axis=-1)))
        return float(np.mean(flipped >= abs(stat(diff, axis=-1)) * (1 - 1e-12)))
    signs = np.random.default_rng([seed, 1]).choice([-1.0, 1.0], (n_flips, n))
    flipped = np.abs(np.asarray(stat(signs * diff, axis=-1)))
    k = np.count_nonzero(flipped >= abs(stat(diff, axis=-1)) * (1 - 1e-12))
    return float((k + 1) / (n_flips + 1))


def paired_bootstrap(a, b, stat: Callable = np.mean, *, n_boot: int = N_BOOT, level: float = 0.95,
                     seed: int = 0) -> PairedComparison:
    """Model ``a`` minus model ``b`` on the same items [N]: stat(a − b), interval and p-value.

    Items are resampled as pairs, so what the two models share (an easy patient) cancels. The
    interval is the percentile bootstrap of stat(a − b). The p-value comes from a sign-flip
    randomisation test (Fisher's paired test), which stays valid for the handful of patients a
    phantom study has, where the bootstrap cannot: with 3 patients, all favouring one model,
    p = 2/8, not ≈ 0. Pairs with a NaN on either side are left out.
    """
    a, b = _check(a, "a"), _check(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"paired_bootstrap: a {a.shape} and b {b.shape} must pair item by item")
    _check_level(level, n_boot)
    diff = (a - b)[~(np.isnan(a) | np.isnan(b))]
    if diff.size == 0:
        return PairedComparison(float("nan"), float("nan"), float("nan"), float("nan"))
    estimate = float(stat(diff, axis=-1))
    p_value = _sign_flip_p(diff, stat, n_boot, seed)
    if diff.size < 2:
        return PairedComparison(estimate, float("nan"), float("nan"), p_value)
    boot = _resampled(diff, stat, n_boot, seed)
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return PairedComparison(estimate, float(low), float(high), p_value)
