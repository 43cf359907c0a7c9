"""Variance-preserving diffusion in log-SNR form: α, σ and the v / ε / x0 conversions.

z_t = α_t x0 + σ_t ε with α² = sigmoid(λ), σ² = sigmoid(−λ) (Kingma et al. 2021), and the
v-parametrisation v = α ε − σ x0 (Salimans & Ho 2022; paper §3.3). These are the only places the
algebra is written; losses and samplers import them. Images are NHWC, λ has shape [B].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def alpha_sigma(logsnr: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(α, σ) with α² = sigmoid(λ), σ² = sigmoid(−λ), so α² + σ² = 1 (VP, Kingma et al. 2021)."""
    return jnp.sqrt(jax.nn.sigmoid(logsnr)), jnp.sqrt(jax.nn.sigmoid(-logsnr))


def expand_logsnr(logsnr: jax.Array, x: jax.Array, name: str = "x") -> jax.Array:
    """Reshape per-sample λ [B] to [B, 1, ..., 1] so it broadcasts against ``x`` [B, ...]."""
    if jnp.shape(logsnr) != (x.shape[0],):
        raise ValueError(
            f"logsnr must have shape ({x.shape[0]},) to match the batch of {name} "
            f"{tuple(x.shape)}; got {tuple(jnp.shape(logsnr))}"
        )
    return jnp.reshape(logsnr, (-1,) + (1,) * (x.ndim - 1))


def _alpha_sigma_like(logsnr: jax.Array, x: jax.Array, name: str) -> tuple[jax.Array, jax.Array]:
    alpha, sigma = alpha_sigma(expand_logsnr(logsnr, x, name))
    return alpha.astype(x.dtype), sigma.astype(x.dtype)


def _check_same_shape(a: jax.Array, b: jax.Array, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_b} must have the shape of {name_a} {tuple(a.shape)}; got {tuple(b.shape)}"
        )


def q_sample(x0: jax.Array, eps: jax.Array, logsnr: jax.Array) -> jax.Array:
    """Forward process z_t = α x0 + σ ε (Kingma et al. 2021, §3.1)."""
    _check_same_shape(x0, eps, "x0", "eps")
    alpha, sigma = _alpha_sigma_like(logsnr, x0, "x0")
    return alpha * x0 + sigma * eps


def v_target(x0: jax.Array, eps: jax.Array, logsnr: jax.Array) -> jax.Array:
    """Velocity target v = α ε − σ x0 (Salimans & Ho 2022, §4; paper §3.3)."""
    _check_same_shape(x0, eps, "x0", "eps")
    alpha, sigma = _alpha_sigma_like(logsnr, x0, "x0")
    return alpha * eps - sigma * x0


def x0_from_v(z_t: jax.Array, v: jax.Array, logsnr: jax.Array) -> jax.Array:
    """Data estimate x0 = α z_t − σ v (inverts q_sample / v_target)."""
    _check_same_shape(z_t, v, "z_t", "v")
    alpha, sigma = _alpha_sigma_like(logsnr, z_t, "z_t")
    return alpha * z_t - sigma * v


def eps_from_v(z_t: jax.Array, v: jax.Array, logsnr: jax.Array) -> jax.Array:
    """Noise estimate ε = σ z_t + α v (inverts q_sample / v_target)."""
    _check_same_shape(z_t, v, "z_t", "v")
    alpha, sigma = _alpha_sigma_like(logsnr, z_t, "z_t")
    return sigma * z_t + alpha * v
