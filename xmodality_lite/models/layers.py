"""Building blocks shared by the convolutional models: U-Net, ADM and U-ViT (paper §3.2).

Conventions (reference facts §1): NHWC tensors; every Dense/Conv has a glorot-uniform kernel and
a zero bias; norms use ε = 1e-6; GELU is the tanh approximation; ``dtype`` is the compute dtype
and parameters stay float32. The time input of every diffusion model is the log-SNR λ.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from xmodality_lite.models.attention import dot_product_attention
from xmodality_lite.models.convolution import conv_general_dilated

Norm = Literal["group", "rms"]
Variant = Literal["published", "corrected"]
VARIANTS = ("published", "corrected")

EPS = 1e-6
glorot = nnx.initializers.glorot_uniform()
zeros = nnx.initializers.zeros_init()


def gelu(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=True)


def dense(n_in: int, n_out: int, *, dtype, rngs: nnx.Rngs) -> nnx.Linear:
    """A Dense layer (1×1 convolution on NHWC) with the house initialisers."""
    return nnx.Linear(n_in, n_out, kernel_init=glorot, bias_init=zeros, dtype=dtype, rngs=rngs)


def conv(n_in: int, n_out: int, size: int, *, dtype, rngs: nnx.Rngs) -> nnx.Conv:
    """A stride-1 ``size``×``size`` convolution with 'same' zero padding.

    Its kernel gradient runs as matrix products on the CPU (:mod:`.convolution`).
    """
    return nnx.Conv(n_in, n_out, (size, size), padding="SAME", kernel_init=glorot,
                    bias_init=zeros, dtype=dtype, rngs=rngs,
                    conv_general_dilated=conv_general_dilated)


def norm(kind: Norm, features: int, *, groups: int, dtype, rngs: nnx.Rngs) -> nnx.Module:
    """GroupNorm (the U-Net baseline) or RMSNorm (the diffusion models), chosen by name."""
    if kind == "group":
        return nnx.GroupNorm(features, num_groups=groups, epsilon=EPS, dtype=dtype, rngs=rngs)
    if kind == "rms":
        return nnx.RMSNorm(features, epsilon=EPS, dtype=dtype, rngs=rngs)
    raise ValueError(f"unknown norm {kind!r}; choose one of ['group', 'rms']")


def check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {list(VARIANTS)}")


def check_image(x: jax.Array, name: str, channels: int, multiple: int) -> None:
    """Raise unless ``x`` is [B, H, W, channels] with H and W divisible by ``multiple``."""
    expected = f"[B, H, W, {channels}] with H, W divisible by {multiple}"
    if x.ndim != 4 or x.shape[-1] != channels or x.shape[1] % multiple or x.shape[2] % multiple:
        raise ValueError(f"{name} must be {expected}; got shape {tuple(x.shape)}")


def check_logsnr(logsnr: jax.Array | None, batch: int) -> None:
    if logsnr is None or jnp.shape(logsnr) != (batch,):
        got = None if logsnr is None else tuple(jnp.shape(logsnr))
        raise ValueError(f"logsnr must have shape [B] = ({batch},); got {got}")


# --- time embedding ---------------------------------------------------------------------------


def logsnr_embedding(logsnr: jax.Array, dim: int) -> jax.Array:
    """Sinusoidal features [sin(λ f_k), cos(λ f_k)], f_k = 10000^(−k/(dim/2 − 1)) (facts §1).

    [B] → [B, dim]. The divisor is half − 1, as in the published conv models.
    """
    half = dim // 2
    freqs = jnp.exp(-jnp.log(10000.0) * jnp.arange(half) / (half - 1))
    angles = jnp.asarray(logsnr, jnp.float32)[:, None] * freqs
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class TimeMLP(nnx.Module):
    """λ → sinusoidal features (width C) → Dense(4C) → GELU → Dense(4C)."""

    def __init__(self, dim: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.dim = dim
        self.dense_0 = dense(dim, 4 * dim, dtype=dtype, rngs=rngs)
        self.dense_1 = dense(4 * dim, 4 * dim, dtype=dtype, rngs=rngs)

    def __call__(self, logsnr: jax.Array) -> jax.Array:  # [B] → [B, 4C]
        return self.dense_1(gelu(self.dense_0(logsnr_embedding(logsnr, self.dim))))


# --- convolutional blocks ---------------------------------------------------------------------


class ConvBlock(nnx.Module):
    """Conv 3×3 → norm → optional FiLM x·(scale + 1) + shift → GELU."""

    def __init__(self, n_in: int, n_out: int, *, norm_kind: Norm, groups: int = 32,
                 dtype=jnp.float32, rngs: nnx.Rngs):
        self.conv = conv(n_in, n_out, 3, dtype=dtype, rngs=rngs)
        self.norm = norm(norm_kind, n_out, groups=groups, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, scale_shift=None) -> jax.Array:
        x = self.norm(self.conv(x))
        if scale_shift is not None:
            scale, shift = scale_shift
            x = x * (scale + 1) + shift
        return gelu(x)


class ResNetBlock(nnx.Module):
    """Two ConvBlocks, the first FiLM-modulated by the time embedding, plus a residual.

    ``residual=True`` adds the input back (through a 1×1 projection when ``n_in != n_out``);
    ``residual=False`` reproduces the published blocks declared with dim == dim_out, which have
    no residual at all (facts §1, §15.5). The models decide which applies.
    """

    def __init__(self, n_in: int, n_out: int, *, time_dim: int | None = None,
                 residual: bool = True, norm_kind: Norm = "rms", groups: int = 32,
                 dtype=jnp.float32, rngs: nnx.Rngs):
        kw = dict(norm_kind=norm_kind, groups=groups, dtype=dtype, rngs=rngs)
        self.time = dense(time_dim, 2 * n_out, dtype=dtype, rngs=rngs) if time_dim else None
        self.block_0 = ConvBlock(n_in, n_out, **kw)
        self.block_1 = ConvBlock(n_out, n_out, **kw)
        self.residual = residual
        needs_projection = residual and n_in != n_out
        self.proj = dense(n_in, n_out, dtype=dtype, rngs=rngs) if needs_projection else None

    def __call__(self, x: jax.Array, t_emb: jax.Array | None = None) -> jax.Array:
        scale_shift = None
        if self.time is not None and t_emb is not None:
            st = self.time(gelu(t_emb))[:, None, None, :]  # [B, 1, 1, 2·C_out]
            scale_shift = jnp.split(st, 2, axis=-1)
        h = self.block_1(self.block_0(x, scale_shift))
        if not self.residual:
            return h
        return h + (self.proj(x) if self.proj is not None else x)


# --- pixel shuffle (Shi et al. 2016; paper §3.2) ------------------------------------------------


def space_to_depth(x: jax.Array) -> jax.Array:
    """[B, 2h, 2w, C] → [B, h, w, 4C], channel-major: ``b (h s1) (w s2) c -> b h w (c s1 s2)``."""
    b, hh, ww, c = x.shape
    x = x.reshape(b, hh // 2, 2, ww // 2, 2, c).transpose(0, 1, 3, 5, 2, 4)
    return x.reshape(b, hh // 2, ww // 2, 4 * c)


def depth_to_space(x: jax.Array) -> jax.Array:
    """Inverse of :func:`space_to_depth`: [B, h, w, 4C] → [B, 2h, 2w, C]."""
    b, h, w, c4 = x.shape
    x = x.reshape(b, h, w, c4 // 4, 2, 2).transpose(0, 1, 4, 2, 5, 3)
    return x.reshape(b, 2 * h, 2 * w, c4 // 4)


class PixelShuffleDown(nnx.Module):
    """Space-to-depth 2×2, then Dense(n_out): halves H and W."""

    def __init__(self, n_in: int, n_out: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.dense = dense(4 * n_in, n_out, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.dense(space_to_depth(x))


class PixelShuffleUp(nnx.Module):
    """Dense(4·n_out) → GELU → depth-to-space 2×2: doubles H and W."""

    def __init__(self, n_in: int, n_out: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.dense = dense(n_in, 4 * n_out, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return depth_to_space(gelu(self.dense(x)))


# --- conv-stage attention ---------------------------------------------------------------------


class RowAttention(nnx.Module):
    """x + MHA(RMSNorm(x)) along W, separately for every image row (facts §1, §15.4).

    The published models apply flax's multi-head attention to [B, H, W, C], which treats H as a
    batch axis: each row attends only within itself. We keep that (the weights expect it, and it
    costs O(H·W²) instead of O(H²·W²)). Kernels use the flax layout: q/k/v [C, heads, C/heads],
    out [heads, C/heads, C].
    """

    def __init__(self, dim: int, heads: int = 4, *, dtype=jnp.float32, rngs: nnx.Rngs):
        if dim % heads:
            raise ValueError(f"attention width {dim} must be divisible by heads={heads}")
        hd = dim // heads
        self.dtype = dtype
        self.norm = nnx.RMSNorm(dim, epsilon=EPS, dtype=dtype, rngs=rngs)

        def kernel(*shape):  # glorot over the flattened [C, C] matrix, as flax DenseGeneral
            return nnx.Param(glorot(rngs.params(), (dim, dim), jnp.float32).reshape(shape))

        self.query = kernel(dim, heads, hd)
        self.key = kernel(dim, heads, hd)
        self.value = kernel(dim, heads, hd)
        self.out = kernel(heads, hd, dim)
        self.query_bias = nnx.Param(jnp.zeros((heads, hd)))
        self.key_bias = nnx.Param(jnp.zeros((heads, hd)))
        self.value_bias = nnx.Param(jnp.zeros((heads, hd)))
        self.out_bias = nnx.Param(jnp.zeros((dim,)))

    def __call__(self, x: jax.Array) -> jax.Array:  # [B, H, W, C] → [B, H, W, C]
        b, h, w, c = x.shape
        dt = self.dtype
        y = self.norm(x).astype(dt).reshape(b * h, w, c)  # rows become the batch
        # One fused projection for q, k, v: [C, 3, heads, hd].
        qkv_kernel = jnp.stack([self.query[...], self.key[...], self.value[...]], 1).astype(dt)
        qkv_bias = jnp.stack([self.query_bias[...], self.key_bias[...], self.value_bias[...]])
        qkv = jnp.einsum("rwc,cknd->krwnd", y, qkv_kernel) + qkv_bias.astype(dt)[:, None, None]
        o = dot_product_attention(qkv[0], qkv[1], qkv[2])  # [B·H, W, heads, hd]
        o = jnp.einsum("rwnd,ndc->rwc", o, self.out[...].astype(dt)) + self.out_bias[...].astype(dt)
        return x + o.reshape(b, h, w, c).astype(x.dtype)
