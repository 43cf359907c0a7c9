"""Training objectives: v-prediction with Min-SNR-γ weighting (paper §3.3, eq. 7) and the
plain regression loss of the U-Net baseline.

``apply_fn(z_t [B,H,W,C], cond [B,H,W,C], logsnr [B]) -> v_hat [B,H,W,C]`` may be any callable,
including a Flax NNX module, so these losses can be differentiated with ``nnx.value_and_grad``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from xmodality_lite.diffusion.parametrisation import q_sample, v_target
from xmodality_lite.diffusion.schedules import logsnr_cosine

ApplyFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def min_snr_weight(logsnr: jax.Array, gamma: float = 5.0) -> jax.Array:
    """Min-SNR-γ weight for v-prediction, w = min(SNR, γ) / (SNR + 1), SNR = e^λ.

    Paper eq. 7 (Hang et al. 2023). Written as sigmoid(λ) for SNR < γ and γ·sigmoid(−λ)
    otherwise, which is the same value without overflow at large λ.
    """
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0; got {gamma}")
    return jnp.where(
        logsnr < math.log(gamma), jax.nn.sigmoid(logsnr), gamma * jax.nn.sigmoid(-logsnr)
    )


# Loss weightings w(λ) by name. The paper uses one (eq. 7), which diffusion_loss applies; the
# registry is what ``python -m xmodality_lite info`` lists and where another would go.
WEIGHTINGS: dict[str, Callable[..., jax.Array]] = {"min_snr": min_snr_weight}


def _check_images(x0: jax.Array, cond: jax.Array, name_x: str, name_c: str) -> None:
    if x0.ndim != 4:
        raise ValueError(f"{name_x} must be NHWC [B, H, W, C]; got shape {tuple(x0.shape)}")
    if cond.shape != x0.shape:
        raise ValueError(
            f"{name_c} must have the shape of {name_x} {tuple(x0.shape)}; got {tuple(cond.shape)}"
        )


def _per_sample_mse(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Mean over H, W, C of the squared error, accumulated in float32. [B]"""
    err = (pred - target).astype(jnp.float32)
    return jnp.mean(jnp.square(err), axis=tuple(range(1, err.ndim)))


def diffusion_loss(
    apply_fn: ApplyFn,
    x0: jax.Array,  # [B, H, W, C] target (CTA) in [-1, 1]
    cond: jax.Array,  # [B, H, W, C] condition (TOF) in [-1, 1]
    key: jax.Array,
    *,
    gamma: float = 5.0,
    schedule: Callable[[jax.Array], jax.Array] = logsnr_cosine,
) -> jax.Array:
    """Min-SNR-weighted v-prediction loss (paper §3.3, eq. 7), a float32 scalar.

    1. t ~ U[0, 1) per sample, λ = schedule(t); ε ~ N(0, I).
    2. z_t = α x0 + σ ε; v̂ = apply_fn(z_t, cond, λ).
    3. Batch mean of w(λ) · mean_{H,W,C} (v̂ − v)², w = min_snr_weight(λ, γ).
    """
    _check_images(x0, cond, "x0", "cond")
    key_t, key_eps = jax.random.split(key)
    t = jax.random.uniform(key_t, (x0.shape[0],))
    logsnr = schedule(t)  # [B]
    eps = jax.random.normal(key_eps, x0.shape, x0.dtype)
    v_hat = apply_fn(q_sample(x0, eps, logsnr), cond, logsnr)
    mse = _per_sample_mse(v_hat, v_target(x0, eps, logsnr))
    return jnp.mean(min_snr_weight(logsnr, gamma) * mse)


def regression_loss(
    apply_fn: Callable[[jax.Array], jax.Array],
    tof: jax.Array,  # [B, H, W, C] in [-1, 1]
    cta: jax.Array,  # [B, H, W, C] in [-1, 1]
) -> jax.Array:
    """Plain MSE of apply_fn(tof) against cta for the U-Net baseline (paper §3.2), float32."""
    _check_images(tof, cta, "tof", "cta")
    return jnp.mean(_per_sample_mse(apply_fn(tof), cta))
