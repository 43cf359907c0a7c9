"""Building blocks of all four architectures of paper §3.2: U-Net, ADM, U-ViT and DiT.

Conventions, as in the reference code: NHWC tensors; Dense, Conv and attention kernels are
glorot-uniform and biases zero unless a model says otherwise; norms use ε = 1e-6; GELU is the
tanh approximation; ``dtype`` is the compute dtype and parameters stay float32. The time input
of every diffusion model is the log-SNR λ. Argument names are the same everywhere: ``dim``
(width), ``heads``, ``depth``, ``mlp_dim``, ``variant``, ``dtype``, ``rngs``.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from xmodality_lite import prng
from xmodality_lite.models.attention import dot_product_attention, fused_qkv_attention
from xmodality_lite.models.convolution import conv_general_dilated
from xmodality_lite.models.normalization import GroupNorm

Norm = Literal["group", "rms"]
# "published" reproduces the released weights and their quirks; "corrected" fixes them
Variant = Literal["published", "corrected"]
VARIANTS = ("published", "corrected")

EPS = 1e-6
# Initialisers, one per role, as the reference code sets them. The kernels' are defined below
# (:func:`glorot`, :func:`lecun`, :func:`trunc_normal`), each equal bit for bit to the flax
# initialiser here, drawn so that one program serves many shapes:
flax_glorot = nnx.initializers.glorot_uniform()
flax_lecun = nnx.initializers.lecun_normal()
flax_trunc_normal = nnx.initializers.truncated_normal(0.02)
zeros = nnx.initializers.zeros_init()  # biases; adaLN-Zero modulation and DiT's head


@partial(jax.jit, static_argnames=("law", "size", "dtype"))
def _scaled_draw(key: jax.Array, scale: jax.Array, *, law: str, size: int, dtype) -> jax.Array:
    """``size`` numbers of ``law`` (U(−1, 1) or N(0, 1) truncated to (−2, 2)) times ``scale``:
    the draw and the product flax's initialisers make, in one program."""
    if law == "uniform":
        return jax.random.uniform(key, (size,), dtype, -1) * scale
    return jax.random.truncated_normal(key, -2, 2, (size,), dtype) * scale


def draw_flat(law: str, key: jax.Array, shape, dtype, scale: jax.Array) -> jax.Array:
    """``law``'s numbers at ``shape`` times ``scale``: flax's initialiser draw, bit for bit, as
    the start of a padded flat draw (:mod:`xmodality_lite.prng`). One program serves every
    kernel up to a padded length, where a draw at each shape compiled its own: a smoke ADM
    builds in a fresh process 4.4× faster than with a flat draw of its own length per kernel,
    15× faster than with flax's initialisers (benchmarks/RESULTS.md §12)."""
    shape = tuple(int(n) for n in shape)
    size = prng.draw_size(math.prod(shape), key)
    return prng.cut(_scaled_draw(key, scale, law=law, size=size, dtype=jnp.dtype(dtype)), shape)


def glorot(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    """Glorot-uniform kernels (every Dense, Conv and attention kernel unless a model says
    otherwise): flax's ``glorot_uniform`` bit for bit, drawn by :func:`draw_flat`.

    U(−1, 1) × √(3·variance), variance = 2 / (fan_in + fan_out), with the fans of the real
    shape (receptive field × C_in, receptive field × C_out), computed as flax's
    ``variance_scaling`` does.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) < 2:
        raise ValueError(f"glorot needs a kernel of rank >= 2; got shape {shape}")
    receptive = math.prod(shape[:-2])
    fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
    variance = jnp.array(1.0 / ((fan_in + fan_out) / 2), dtype=dtype)
    return draw_flat("uniform", key, shape, dtype, jnp.sqrt(3 * variance).astype(dtype))


def lecun(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    """Lecun-normal kernels (flax's default, kept by DiT's attention): flax's ``lecun_normal``
    bit for bit, drawn by :func:`draw_flat`. N(0, 1) truncated to (−2, 2), times
    √(1 / fan_in) ÷ 0.8796 (the truncated law's standard deviation)."""
    shape = tuple(int(n) for n in shape)
    if len(shape) < 2:
        raise ValueError(f"lecun needs a kernel of rank >= 2; got shape {shape}")
    variance = jnp.array(1.0 / (shape[-2] * math.prod(shape[:-2])), dtype=dtype)
    scale = jnp.sqrt(variance) / jnp.array(0.87962566103423978, dtype)
    return draw_flat("truncated_normal", key, shape, dtype, scale)


def trunc_normal(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    """N(0, 1) truncated to (−2, 2), times 0.02 (DiT's time MLP): flax's
    ``truncated_normal(0.02)`` bit for bit, drawn by :func:`draw_flat`."""
    return draw_flat("truncated_normal", key, shape, dtype, jnp.array(0.02, dtype))


def gelu(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=True)


def dense(n_in: int, n_out: int, *, dtype, rngs: nnx.Rngs) -> nnx.Linear:
    """A Dense layer (1×1 convolution on NHWC) with the house initialisers."""
    return nnx.Linear(n_in, n_out, kernel_init=glorot, bias_init=zeros, dtype=dtype, rngs=rngs)


def conv(n_in: int, n_out: int, size: int, *, dtype, rngs: nnx.Rngs) -> nnx.Conv:
    """A stride-1 ``size``×``size`` convolution with 'same' zero padding.

    On the CPU, wide layers compute their kernel gradient as matrix products
    (:mod:`.convolution`, a ``jax.custom_vjp``): there, differentiate in reverse mode (``grad``,
    ``vjp``); forward mode (``jvp``, ``jacfwd``) through such a layer raises. Other backends
    and small layers run ``lax.conv_general_dilated`` with all of JAX's autodiff.
    """
    return nnx.Conv(n_in, n_out, (size, size), padding="SAME", kernel_init=glorot,
                    bias_init=zeros, dtype=dtype, rngs=rngs,
                    conv_general_dilated=conv_general_dilated)


def norm(kind: Norm, features: int, *, groups: int, dtype, rngs: nnx.Rngs) -> nnx.Module:
    """GroupNorm (the U-Net baseline; :class:`.normalization.GroupNorm`, flax's parameters and
    results with faster sums) or RMSNorm (the diffusion models), chosen by name."""
    if kind == "group":
        return GroupNorm(features, num_groups=groups, epsilon=EPS, dtype=dtype, rngs=rngs)
    if kind == "rms":
        return nnx.RMSNorm(features, epsilon=EPS, dtype=dtype, rngs=rngs)
    raise ValueError(f"unknown norm {kind!r}; choose one of ['group', 'rms']")


def check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {sorted(VARIANTS)}")


def check_image(x: jax.Array, name: str, channels: int, multiple: int,
                what: str = "the downsampling factor") -> None:
    """Raise unless ``x`` is [B, H, W, channels] with H and W divisible by ``multiple``
    (``what`` names it in the message: the downsampling factor, or DiT's patch size)."""
    expected = f"[B, H, W, {channels}] with H, W divisible by {what} {multiple}"
    if x.ndim != 4 or x.shape[-1] != channels or x.shape[1] % multiple or x.shape[2] % multiple:
        raise ValueError(f"{name} must be {expected}; got shape {tuple(x.shape)}")


def check_logsnr(logsnr: jax.Array | None, batch: int) -> None:
    if logsnr is None or jnp.shape(logsnr) != (batch,):
        got = None if logsnr is None else tuple(jnp.shape(logsnr))
        raise ValueError(f"logsnr must have shape [B] = ({batch},); got {got}")


def check_diffusion_inputs(x: jax.Array, cond: jax.Array | None, logsnr: jax.Array | None,
                           channels: int, multiple: int,
                           what: str = "the downsampling factor") -> None:
    """x_t and cond [B, H, W, channels] (H, W divisible by ``multiple``), λ [B]."""
    check_image(x, "x", channels, multiple, what)
    if cond is None or tuple(cond.shape) != tuple(x.shape):
        got = None if cond is None else tuple(cond.shape)
        raise ValueError(f"cond must have the shape of x, {tuple(x.shape)}; got {got}")
    check_logsnr(logsnr, x.shape[0])


# --- time embedding ---------------------------------------------------------------------------


def logsnr_embedding(logsnr: jax.Array, dim: int, *, cos_first: bool = False,
                     endpoint: bool = True) -> jax.Array:
    """Sinusoidal features of λ (Vaswani et al. 2017, §3.5, with λ for the position), [B] → [B, dim].

    The conv models (defaults): [sin(λ f_k), cos(λ f_k)], f_k = 10000^(−k/(half − 1)), so the
    last frequency is exactly 1/10000. DiT (``cos_first=True, endpoint=False``, as in Peebles &
    Xie's code): [cos, sin] with f_k = 10000^(−k/half). Both are the published models' choices.
    """
    half = dim // 2
    steps = half - 1 if endpoint else half
    freqs = jnp.exp(-jnp.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / steps)
    angles = jnp.asarray(logsnr, jnp.float32)[:, None] * freqs
    pair = [jnp.cos(angles), jnp.sin(angles)] if cos_first else [jnp.sin(angles), jnp.cos(angles)]
    return jnp.concatenate(pair, axis=-1)


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
    ``residual=False`` reproduces the reference code's blocks declared with dim == dim_out, which
    add neither the input nor a projection of it. The models decide which applies.
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


# --- attention --------------------------------------------------------------------------------

Projection = tuple[jax.Array, jax.Array]  # (kernel, bias)


def _project(x: jax.Array, projection: Projection, n_in: int, dtype) -> jax.Array:
    """x's last ``n_in`` axes contracted with the kernel's first ``n_in``, plus the bias: what
    flax's ``LinearGeneral`` computes, so the published layout's numbers are reproduced exactly."""
    kernel, bias = (jnp.asarray(p, dtype) for p in projection)
    contract = (tuple(range(x.ndim - n_in, x.ndim)), tuple(range(n_in)))
    return jax.lax.dot_general(x, kernel, (contract, ((), ()))) + bias


def multi_head_self_attention(x: jax.Array, query: Projection, key: Projection,
                              value: Projection, out: Projection, *, dtype,
                              fuse_qkv: bool = False) -> jax.Array:
    """Multi-head self-attention (Vaswani et al. 2017, §3.2.2) over the tokens of x [..., T, D].

    The parameters have flax linen ``MultiHeadDotProductAttention``'s layout, so the published
    weights' one: ``query``/``key``/``value`` are (kernel [D, heads, D/heads], bias [heads,
    D/heads]) and ``out`` is (kernel [heads, D/heads, D], bias [D]). As in flax, every axis before
    the last two is a batch axis. Returns [..., T, D] in ``dtype``.

    ``fuse_qkv`` computes q, k and v with one einsum (and the output with another) instead of
    flax's four ``dot_general`` calls (:func:`.attention.fused_qkv_attention`, which lays the
    tokens last when sampling). The two differ only in float32 rounding (~1e-6); each
    model keeps the one its shipped weights were trained and checked with (fused: the
    conv-stage :class:`RowAttention`; flax's: the transformers).
    """
    *lead, t, d = x.shape
    y = x.astype(dtype).reshape(-1, t, d)  # [R, W, C]: R batches (image rows) of W tokens
    if fuse_qkv:
        qkv_kernel = jnp.stack([query[0], key[0], value[0]], 1).astype(dtype)  # [C, 3, heads, hd]
        qkv_bias = jnp.stack([query[1], key[1], value[1]]).astype(dtype)  # [3, heads, hd]
        o = fused_qkv_attention(y, qkv_kernel, qkv_bias, out[0].astype(dtype),
                                out[1].astype(dtype))
    else:
        q, k, v = (_project(y, p, 1, dtype) for p in (query, key, value))  # [R, W, heads, hd]
        o = _project(dot_product_attention(q, k, v), out, 2, dtype)
    return o.reshape(*lead, t, d)  # [..., T, D]


def _check_heads(dim: int, heads: int) -> None:
    if dim % heads:
        raise ValueError(f"attention width dim={dim} must be divisible by heads={heads}")


class MultiHeadSelfAttention(nnx.Module):
    """Self-attention over tokens [B, N, D] (the transformers: U-ViT's middle, DiT).

    Parameters ``{query,key,value,out}/{kernel,bias}``, laid out as in
    :func:`multi_head_self_attention`. ``kernel_init`` is :data:`glorot` in U-ViT and flax's
    default :data:`lecun` in DiT, as published.
    """

    def __init__(self, dim: int, heads: int, *, kernel_init=glorot, dtype=jnp.float32,
                 rngs: nnx.Rngs):
        _check_heads(dim, heads)
        split = (heads, dim // heads)
        proj = dict(kernel_init=kernel_init, dtype=dtype, rngs=rngs)
        self.dtype = dtype
        self.query = nnx.LinearGeneral(dim, split, **proj)
        self.key = nnx.LinearGeneral(dim, split, **proj)
        self.value = nnx.LinearGeneral(dim, split, **proj)
        self.out = nnx.LinearGeneral(split, dim, axis=(-2, -1), **proj)

    def __call__(self, x: jax.Array) -> jax.Array:  # [B, N, D] → [B, N, D]
        if x.ndim != 3:
            raise ValueError(f"x must be tokens [B, N, D]; got shape {tuple(x.shape)}")
        q, k, v, o = ((p.kernel[...], p.bias[...])
                      for p in (self.query, self.key, self.value, self.out))
        return multi_head_self_attention(x, q, k, v, o, dtype=self.dtype)


class RowAttention(nnx.Module):
    """x + MHA(RMSNorm(x)) along W, separately for every image row (ADM and U-ViT conv stages).

    The reference code applies flax's multi-head attention to [B, H, W, C], which treats H as a
    batch axis: each row attends only within itself. We keep that (the weights expect it, and it
    costs O(H·W²) instead of O(H²·W²)). The computation is :func:`multi_head_self_attention`;
    the parameters are named ``query``, ``query_bias``, … (not ``query/kernel``) because the
    shipped checkpoints hold them under these names.
    """

    def __init__(self, dim: int, heads: int = 4, *, dtype=jnp.float32, rngs: nnx.Rngs):
        _check_heads(dim, heads)
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
        q, k, v, o = ((getattr(self, p)[...], getattr(self, f"{p}_bias")[...])
                      for p in ("query", "key", "value", "out"))
        o = multi_head_self_attention(self.norm(x), q, k, v, o, dtype=self.dtype, fuse_qkv=True)
        return x + o.astype(x.dtype)
