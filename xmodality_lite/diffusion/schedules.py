"""Noise schedules in log-SNR form, λ(t) = log(α_t² / σ_t²), for continuous t ∈ [0, 1].

t = 0 is (almost) clean data, t = 1 is (almost) pure noise; every schedule here is strictly
decreasing in t. The paper trains and samples with the clipped cosine schedule (§3.3) and swaps
in the shifted cosine and sigmoid schedules post hoc (Appendix A).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

LOGSNR_MIN = -15.0
LOGSNR_MAX = 15.0


def check_unit_interval(t) -> None:
    """Raise ValueError if a concrete ``t`` leaves [0, 1]; traced values are not inspected."""
    if isinstance(t, jax.core.Tracer):
        return
    t_np = np.asarray(t)
    if not np.all((t_np >= 0.0) & (t_np <= 1.0)):
        raise ValueError(
            f"t must lie in [0, 1]; got values in [{np.nanmin(t_np)}, {np.nanmax(t_np)}]"
        )


def _check_logsnr_range(logsnr_min: float, logsnr_max: float) -> None:
    if not logsnr_min < logsnr_max:
        raise ValueError(
            f"logsnr_min must be < logsnr_max; got logsnr_min={logsnr_min}, logsnr_max={logsnr_max}"
        )


def logsnr_cosine(
    t: jax.Array, logsnr_min: float = LOGSNR_MIN, logsnr_max: float = LOGSNR_MAX
) -> jax.Array:
    """Clipped α-cosine schedule (Nichol & Dhariwal 2021; paper §3.3; A.1 with d = 256).

    λ(t) = −2 log tan(t_min + t (t_max − t_min)), t_min = atan(e^{−λ_max/2}),
    t_max = atan(e^{−λ_min/2}); so λ(0) = λ_max and λ(1) = λ_min. Without the clip this is
    −2 log tan(πt/2).
    """
    check_unit_interval(t)
    _check_logsnr_range(logsnr_min, logsnr_max)
    t_min = math.atan(math.exp(-0.5 * logsnr_max))
    t_max = math.atan(math.exp(-0.5 * logsnr_min))
    return -2.0 * jnp.log(jnp.tan(t_min + jnp.asarray(t, jnp.float32) * (t_max - t_min)))


def logsnr_shifted_cosine(
    t: jax.Array,
    image_size: int,
    base_size: int = 32,
    logsnr_min: float = LOGSNR_MIN,
    logsnr_max: float = LOGSNR_MAX,
) -> jax.Array:
    """Resolution-shifted cosine schedule (paper eq. A.1; Hoogeboom et al. 2023).

    λ(t) = λ_cosine(t) + 2 log(base_size / image_size). The paper's Appendix A shifts 256² images
    to a reference resolution of 32. The shift is applied after the clip, so λ spans
    [λ_min + shift, λ_max + shift].
    """
    if image_size < 1 or base_size < 1:
        raise ValueError(
            f"image_size and base_size must be positive; got image_size={image_size}, "
            f"base_size={base_size}"
        )
    shift = 2.0 * math.log(base_size / image_size)
    return logsnr_cosine(t, logsnr_min, logsnr_max) + shift


def logsnr_sigmoid(
    t: jax.Array,
    start: float = 0.0,
    end: float = 3.0,
    tau: float = 0.5,
    logsnr_min: float = LOGSNR_MIN,
    logsnr_max: float = LOGSNR_MAX,
) -> jax.Array:
    """Sigmoid schedule of Jabri et al. (2023), as used in the paper's Appendix A.

    α²(t) = (S(e/τ) − S((t (e − s) + s)/τ)) / (S(e/τ) − S(s/τ)) with S the logistic sigmoid,
    so λ = log α² − log(1 − α²), clipped to [λ_min, λ_max]. Unlike the reference code, the time
    is mapped as (t (e − s) + s)/τ and the normalised sigmoid is α², not α. Computed through
    S(a) − S(b) = S(a) S(−b) (1 − e^{b−a}) in log space, so the ratio stays accurate near the ends.
    """
    check_unit_interval(t)
    _check_logsnr_range(logsnr_min, logsnr_max)
    if not (start < end and tau > 0):
        raise ValueError(f"need start < end and tau > 0; got start={start}, end={end}, tau={tau}")
    log_sig = jax.nn.log_sigmoid

    def log_sigmoid_diff(a, b):  # log(S(a) − S(b)) for a ≥ b
        return log_sig(a) + log_sig(-b) + jnp.log(-jnp.expm1(b - a))

    u = (jnp.asarray(t, jnp.float32) * (end - start) + start) / tau
    e, s = jnp.float32(end / tau), jnp.float32(start / tau)
    logsnr = log_sigmoid_diff(e, u) - log_sigmoid_diff(u, s)
    return jnp.clip(logsnr, logsnr_min, logsnr_max)


SCHEDULES: dict[str, Callable[..., jax.Array]] = {
    "cosine": logsnr_cosine,
    "shifted_cosine": logsnr_shifted_cosine,
    "sigmoid": logsnr_sigmoid,
}


def get_schedule(name: str, **kwargs) -> Callable[[jax.Array], jax.Array]:
    """The schedule ``name`` with ``kwargs`` bound, as a function t -> λ.

    Equal requests return the same object, so jitted samplers keyed on it are not recompiled.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}")
    try:
        inspect.signature(SCHEDULES[name]).bind_partial(None, **kwargs)
    except TypeError as err:
        raise ValueError(f"bad arguments for schedule {name!r}: {err}") from None
    return _bound_schedule(name, tuple(sorted(kwargs.items())))


@functools.cache
def _bound_schedule(name: str, kwargs: tuple) -> Callable[[jax.Array], jax.Array]:
    return functools.partial(SCHEDULES[name], **dict(kwargs))
