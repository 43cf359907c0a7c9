"""Transformer pieces shared by U-ViT's middle and DiT (paper §3.2).

Both use a fixed 2-D sin-cos position embedding, pre-norm RMSNorm blocks with multi-head
self-attention over tokens (:class:`~.layers.MultiHeadSelfAttention`) and a SwiGLU MLP
(Shazeer 2020). U-ViT injects the time embedding into the SwiGLU by FiLM; DiT modulates the
norms instead (adaLN-Zero, :func:`modulate`). The published weights' names for these modules
are mapped in :mod:`.published`.
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from xmodality_lite.models.layers import MultiHeadSelfAttention, glorot


def sincos_2d_embedding(grid_h: int, grid_w: int, dim: int) -> jax.Array:
    """Fixed 2-D sin-cos position embedding, [grid_h·grid_w, dim], tokens row-major.

    With ω_k = 10000^(−k/(D/4 − 1)), k = 0..D/4−1, a token at column x, row y gets
    [sin(xω), cos(xω), sin(yω), cos(yω)]: the column coordinate first, as the reference code
    orders it.
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

    def __init__(self, dim: int, mlp_dim: int, *, time_dim: int | None = None,
                 dtype=jnp.float32, rngs: nnx.Rngs):
        dense = dict(kernel_init=glorot, dtype=dtype, rngs=rngs)
        self.time_proj = nnx.Linear(time_dim, 2 * mlp_dim, **dense) if time_dim else None
        self.gate = nnx.Linear(dim, mlp_dim, **dense)
        self.value = nnx.Linear(dim, mlp_dim, **dense)
        self.out = nnx.Linear(mlp_dim, dim, **dense)

    def __call__(self, x: jax.Array, t_emb: jax.Array | None = None) -> jax.Array:
        h = nnx.silu(self.gate(x)) * self.value(x)  # [B, N, mlp_dim]
        if self.time_proj is not None:
            if t_emb is None:
                raise ValueError("t_emb [B, time_dim] is required: this SwiGLU has time_dim set")
            scale, shift = jnp.split(_per_example(self.time_proj(nnx.gelu(t_emb)), h.ndim), 2, -1)
            h = h * (1 + scale) + shift
        return self.out(h)


class TransformerBlock(nnx.Module):
    """Pre-norm block: x += MHA(RMSNorm(x)); x += SwiGLU(RMSNorm(x), t_emb)."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, *, time_dim: int | None = None,
                 dtype=jnp.float32, rngs: nnx.Rngs):
        self.attention_norm = nnx.RMSNorm(dim, dtype=dtype, rngs=rngs)
        self.attention = MultiHeadSelfAttention(dim, heads, dtype=dtype, rngs=rngs)
        self.mlp_norm = nnx.RMSNorm(dim, dtype=dtype, rngs=rngs)
        self.mlp = SwiGLU(dim, mlp_dim, time_dim=time_dim, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, t_emb: jax.Array | None = None) -> jax.Array:
        x = x + self.attention(self.attention_norm(x))
        return x + self.mlp(self.mlp_norm(x), t_emb)


class Transformer(nnx.Module):
    """``depth`` pre-norm blocks and a final RMSNorm: U-ViT's middle.

    Position embeddings are the caller's job (U-ViT adds :func:`sincos_2d_embedding`).
    """

    def __init__(self, depth: int, dim: int, heads: int, mlp_dim: int, *,
                 time_dim: int | None = None, dtype=jnp.float32, rngs: nnx.Rngs):
        self.blocks = nnx.List([
            TransformerBlock(dim, heads, mlp_dim, time_dim=time_dim, dtype=dtype, rngs=rngs)
            for _ in range(depth)
        ])
        self.final_norm = nnx.RMSNorm(dim, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, t_emb: jax.Array | None = None) -> jax.Array:
        for block in self.blocks:  # x: [B, N, dim]
            x = block(x, t_emb)
        return self.final_norm(x)
