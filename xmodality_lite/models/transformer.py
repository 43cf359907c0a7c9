"""Transformer pieces shared by U-ViT's middle and DiT (paper §3.2).

Both use a fixed 2-D sin-cos position embedding, pre-norm RMSNorm blocks with multi-head
self-attention over tokens and a SwiGLU MLP (Shazeer 2020). U-ViT injects the time embedding
into the SwiGLU by FiLM; DiT modulates the norms instead (adaLN-Zero, :func:`modulate`).

Published parameter names (flax linen, ``xmodality-param-layout.txt``) and ours:

=========================================  ==========================================
published (``Transformer_0/...``)          ours (NNX path in :class:`Transformer`)
=========================================  ==========================================
``RMSNorm_{2i}``                           ``blocks/i/attention_norm``
``MultiHeadDotProductAttention_{i}``       ``blocks/i/attention`` (query/key/value/out)
``RMSNorm_{2i+1}``                         ``blocks/i/mlp_norm``
``SwiGLU_{i}/Dense_0`` (time, if any)      ``blocks/i/mlp/time_proj``
``SwiGLU_{i}/Dense_{0,1,2}`` (+1 w/ time)  ``blocks/i/mlp/{gate,value,out}``
``RMSNorm_{2·depth}``                      ``final_norm``
=========================================  ==========================================

:func:`transformer_published_mapping` spells this out key by key.
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from xmodality_lite.models.attention import dot_product_attention

glorot = nnx.initializers.xavier_uniform()
lecun = nnx.initializers.lecun_normal()  # flax's default kernel init (DiT's attention)

Path = tuple[str | int, ...]


def sincos_2d_embedding(grid_h: int, grid_w: int, dim: int) -> jax.Array:
    """Fixed 2-D sin-cos position embedding, [grid_h·grid_w, dim], tokens row-major.

    With ω_k = 10000^(−k/(D/4 − 1)), k = 0..D/4−1, a token at column x, row y gets
    [sin(xω), cos(xω), sin(yω), cos(yω)] (column coordinate first; facts §4).
    """
    if dim % 4 or dim < 8:
        raise ValueError(f"dim must be a multiple of 4 and ≥ 8 for a 2-D sin-cos embedding; got {dim}")
    omega = 10000.0 ** (-np.arange(dim // 4) / (dim // 4 - 1))
    y, x = np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing="ij")
    x = x.reshape(-1, 1) * omega  # [N, D/4]
    y = y.reshape(-1, 1) * omega
    return jnp.asarray(np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], 1), jnp.float32)


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    """adaLN modulation x·(1 + scale) + shift (Peebles & Xie 2023)."""
    return x * (1 + scale) + shift


def _per_example(v: jax.Array, ndim: int) -> jax.Array:
    """[B, F] → [B, 1, …, 1, F] so a per-example vector broadcasts over tokens."""
    return v.reshape(v.shape[:1] + (1,) * (ndim - 2) + v.shape[1:])


class SwiGLU(nnx.Module):
    """out(silu(gate(x)) · value(x)), optionally FiLM-ed by the time embedding (U-ViT).

    With ``time_dim``: h ← h·(1 + scale) + shift, where (scale, shift) = time_proj(gelu(t)).
    """

    def __init__(self, dim: int, hidden: int, *, time_dim: int | None = None,
                 dtype=jnp.float32, rngs: nnx.Rngs):
        dense = dict(kernel_init=glorot, dtype=dtype, rngs=rngs)
        self.time_proj = nnx.Linear(time_dim, 2 * hidden, **dense) if time_dim else None
        self.gate = nnx.Linear(dim, hidden, **dense)
        self.value = nnx.Linear(dim, hidden, **dense)
        self.out = nnx.Linear(hidden, dim, **dense)

    def __call__(self, x: jax.Array, t_emb: jax.Array | None = None) -> jax.Array:
        h = nnx.silu(self.gate(x)) * self.value(x)  # [B, N, hidden]
        if self.time_proj is not None:
            if t_emb is None:
                raise ValueError("t_emb [B, time_dim] is required: this SwiGLU has time_dim set")
            scale, shift = jnp.split(_per_example(self.time_proj(nnx.gelu(t_emb)), h.ndim), 2, -1)
            h = h * (1 + scale) + shift
        return self.out(h)


class MultiHeadSelfAttention(nnx.Module):
    """Softmax self-attention over tokens [B, N, D] (flax linen MHA's parameter layout).

    query/key/value kernels are [D, heads, D/heads] and the out kernel [heads, D/heads, D].
    """

    def __init__(self, dim: int, num_heads: int, *, kernel_init=glorot,
                 dtype=jnp.float32, rngs: nnx.Rngs):
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        heads = (num_heads, dim // num_heads)
        proj = dict(kernel_init=kernel_init, dtype=dtype, rngs=rngs)
        self.query = nnx.LinearGeneral(dim, heads, **proj)
        self.key = nnx.LinearGeneral(dim, heads, **proj)
        self.value = nnx.LinearGeneral(dim, heads, **proj)
        self.out = nnx.LinearGeneral(heads, dim, axis=(-2, -1), **proj)

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 3:
            raise ValueError(f"x must be tokens [B, N, D]; got shape {x.shape}")
        q, k, v = self.query(x), self.key(x), self.value(x)  # [B, N, heads, head_dim]
        return self.out(dot_product_attention(q, k, v))  # [B, N, D]


class TransformerBlock(nnx.Module):
    """Pre-norm block: x += MHA(RMSNorm(x)); x += SwiGLU(RMSNorm(x), t_emb)."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, *, time_dim: int | None = None,
                 dtype=jnp.float32, rngs: nnx.Rngs):
        self.attention_norm = nnx.RMSNorm(dim, dtype=dtype, rngs=rngs)
        self.attention = MultiHeadSelfAttention(dim, num_heads, dtype=dtype, rngs=rngs)
        self.mlp_norm = nnx.RMSNorm(dim, dtype=dtype, rngs=rngs)
        self.mlp = SwiGLU(dim, mlp_dim, time_dim=time_dim, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, t_emb: jax.Array | None = None) -> jax.Array:
        x = x + self.attention(self.attention_norm(x))
        return x + self.mlp(self.mlp_norm(x), t_emb)


class Transformer(nnx.Module):
    """``depth`` pre-norm blocks and a final RMSNorm: U-ViT's middle (facts §4).

    Position embeddings are the caller's job (U-ViT adds :func:`sincos_2d_embedding`).
    """

    def __init__(self, depth: int, dim: int, num_heads: int, mlp_dim: int, *,
                 time_dim: int | None = None, dtype=jnp.float32, rngs: nnx.Rngs):
        self.blocks = nnx.List([
            TransformerBlock(dim, num_heads, mlp_dim, time_dim=time_dim, dtype=dtype, rngs=rngs)
            for _ in range(depth)
        ])
        self.final_norm = nnx.RMSNorm(dim, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, t_emb: jax.Array | None = None) -> jax.Array:
        for block in self.blocks:  # x: [B, N, dim]
            x = block(x, t_emb)
        return self.final_norm(x)


_ATTENTION_KEYS = [f"{p}/{w}" for p in ("key", "out", "query", "value") for w in ("bias", "kernel")]


def attention_published_mapping(published: str, ours: Path) -> dict[str, Path]:
    """Flax linen MHA keys under ``published`` → our MultiHeadSelfAttention paths under ``ours``."""
    return {f"{published}/{k}": (*ours, *k.split("/")) for k in _ATTENTION_KEYS}


def swiglu_published_mapping(published: str, ours: Path, *, with_time: bool) -> dict[str, Path]:
    """``SwiGLU_n/Dense_j`` keys → our paths; Dense_0 is the time projection iff ``with_time``."""
    names = (["time_proj"] if with_time else []) + ["gate", "value", "out"]
    return {
        f"{published}/Dense_{j}/{w}": (*ours, name, w)
        for j, name in enumerate(names) for w in ("bias", "kernel")
    }


def transformer_published_mapping(depth: int, *, with_time: bool = True,
                                  prefix: str = "Transformer_0") -> dict[str, Path]:
    """Published U-ViT transformer keys (``prefix/...``) → :class:`Transformer` param paths."""
    mapping = {f"{prefix}/RMSNorm_{2 * depth}/scale": ("final_norm", "scale")}
    for i in range(depth):
        block: Path = ("blocks", i)
        mapping[f"{prefix}/RMSNorm_{2 * i}/scale"] = (*block, "attention_norm", "scale")
        mapping[f"{prefix}/RMSNorm_{2 * i + 1}/scale"] = (*block, "mlp_norm", "scale")
        mapping |= attention_published_mapping(
            f"{prefix}/MultiHeadDotProductAttention_{i}", (*block, "attention"))
        mapping |= swiglu_published_mapping(
            f"{prefix}/SwiGLU_{i}", (*block, "mlp"), with_time=with_time)
    return mapping
