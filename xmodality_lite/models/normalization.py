"""Group normalisation (Wu & He 2018), the U-Net baseline's norm, with its statistics as sums
over the image first and over each group's channels second.

For x [B, ..., C] with the C channels in G groups of C/G, every (image, group) is normalised
by its own mean and variance over the spatial positions and the group's channels:

    x̂ = (x − μ_bg) · (σ²_bg + ε)^(−1/2),   y = γ · x̂ + β,

μ and σ² as flax's ``nnx.GroupNorm`` computes them (σ² = E[x²] − μ², clipped at 0; statistics
in float32 at least). The parameters are flax's too (``scale`` γ and ``bias`` β, [C]), so the
published U-Net's weights load unchanged.

What differs is the order of the sums. Flax reduces x reshaped [B, ..., G, C/G] over every axis
but B and G at once; on the CPU, XLA hands that strided reduction to its YNNPACK library, which
runs it at under 1 GB/s: in XLA's trace of a `cpu`-profile U-Net forward at batch 32, the
statistics of its 28 norms took 118 of 296 ms. Summing the spatial positions first,
[B, ..., C] → [B, C], over axes where the channels stay contiguous, then the C/G channels of
each group, is an order of magnitude faster and, with partial sums of fewer terms, closer to
the float64 result (tested): that forward went from 0.94× to 1.27× the speed of the baseline
(``benchmarks/RESULTS.md`` §8).

Differentiation: :func:`group_norm` is a ``jax.custom_jvp`` with the closed-form tangent

    dx̂ = (σ² + ε)^(−1/2) · (dx − mean_g(dx) − x̂ · mean_g(x̂ · dx)),   dy = γ·dx̂ + x̂·dγ + dβ,

(mean_g: the mean over one image's group), from which JAX derives reverse mode by transposing
it: the gradient uses the same fast sums, and forward and reverse mode both work.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx


def group_sums(groups: int, *xs: jax.Array) -> list[jax.Array]:
    """Σ over the positions and each group's channels: [B, ..., C] → [B, G], for each x.

    Positions first (channels contiguous), then the C/G channels of each group."""
    out = []
    for x in xs:
        per_channel = x.sum(tuple(range(1, x.ndim - 1)))  # [B, C]
        b, c = per_channel.shape
        out.append(per_channel.reshape(b, groups, c // groups).sum(-1))
    return out


def _per_channel(s: jax.Array, x: jax.Array) -> jax.Array:
    """[B, G] → [B, 1, …, 1, C]: each group's value on each of its channels, broadcastable to x."""
    b, g = s.shape
    c = x.shape[-1]
    return jnp.repeat(s, c // g, axis=-1).reshape(b, *([1] * (x.ndim - 2)), c)


def _normalise(x: jax.Array, groups: int, epsilon: float) -> tuple[jax.Array, jax.Array]:
    """x̂ and (σ² + ε)^(−1/2) [B, G] of x (float32 at least), as flax's fast-variance path."""
    n = x.size // (x.shape[0] * groups)  # positions × channels per group
    s1, s2 = group_sums(groups, x, x * x)
    mean = s1 / n
    var = jnp.maximum(0.0, s2 / n - mean * mean)
    inv_std = jax.lax.rsqrt(var + epsilon)
    return (x - _per_channel(mean, x)) * _per_channel(inv_std, x), inv_std


@partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def group_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, groups: int,
               epsilon: float) -> jax.Array:
    """γ · x̂ + β, x̂ = x normalised per (image, group of channels): x [B, ..., C], γ, β [C].

    Computes in x's dtype promoted to float32 at least and returns that dtype."""
    x_hat, _ = _normalise(x, groups, epsilon)
    return x_hat * scale + bias


@group_norm.defjvp
def _group_norm_jvp(groups, epsilon, primals, tangents):
    x, scale, bias = primals
    dx, dscale, dbias = tangents
    x_hat, inv_std = _normalise(x, groups, epsilon)
    n = x.size // (x.shape[0] * groups)
    m1, m2 = group_sums(groups, dx, dx * x_hat)
    dx_hat = _per_channel(inv_std, x) * (dx - _per_channel(m1 / n, x)
                                         - x_hat * _per_channel(m2 / n, x))
    return x_hat * scale + bias, dx_hat * scale + x_hat * dscale + dbias


def _dtypes(x: jax.Array, dtype) -> tuple:
    """Flax's norms' dtypes: inputs and parameters are cast to ``dtype`` (default: promoted
    with the float32 parameters), statistics and arithmetic are float32 at least, and the
    result has the inputs' dtype."""
    inputs = jnp.dtype(dtype) if dtype is not None else jnp.promote_types(x.dtype, jnp.float32)
    return inputs, jnp.promote_types(inputs, jnp.float32)


def _as(a: jax.Array, inputs, compute) -> jax.Array:
    return a.astype(inputs).astype(compute)


class GroupNorm(nnx.Module):
    """GroupNorm over [B, ..., C] with flax ``nnx.GroupNorm``'s parameters (``scale``, ``bias``)
    and results (to float32 rounding), computed by :func:`group_norm`.

    ``dtype`` is the output dtype (default, as flax: x's promoted with the float32 parameters);
    statistics are float32 at least; parameters are float32.
    """

    def __init__(self, num_features: int, *, num_groups: int, epsilon: float = 1e-6,
                 dtype=None, rngs: nnx.Rngs):
        if num_groups < 1 or num_features % num_groups:
            raise ValueError(f"num_features={num_features} must be divisible by "
                             f"num_groups={num_groups}")
        self.num_features, self.num_groups, self.epsilon = num_features, num_groups, epsilon
        self.dtype = dtype
        # ones and zeros, each drawing a key as flax's does, so that the layers built after
        # this one get the same initial values as with ``nnx.GroupNorm``
        self.scale = nnx.Param(nnx.initializers.ones(rngs.params(), (num_features,)))
        self.bias = nnx.Param(nnx.initializers.zeros(rngs.params(), (num_features,)))

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim < 2 or x.shape[-1] != self.num_features:
            raise ValueError(f"x must be [B, ..., {self.num_features}]; got shape "
                             f"{tuple(x.shape)}")
        inputs, compute = _dtypes(x, self.dtype)
        y = group_norm(*(_as(a, inputs, compute) for a in (x, self.scale[...], self.bias[...])),
                       self.num_groups, self.epsilon)
        return y.astype(inputs)
